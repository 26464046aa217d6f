import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { EventSource, type FetchLike } from 'eventsource'
import { startHerald, startRedis, redisSkipReason, publish, pollLoop, token, until, sleep, WsClient, SseClient, type Frame, type TestApp } from './helper.js'
import { encodeCursor, decodeCursor } from '../src/protocol/cursor.js'
import { randomInt, seededRandom, testSeed } from './support/random.js'

// Two Herald nodes sharing one private Redis: no sticky sessions, one ordered stream per channel.

const skip = redisSkipReason()

async function twoNodes (t: TestContext): Promise<[TestApp, TestApp]> {
  const redis = await startRedis(t)
  const a = await startHerald(t, { redisUrl: redis.url, options: { nodeId: 'node-a' } })
  const b = await startHerald(t, { redisUrl: redis.url, options: { nodeId: 'node-b' } })
  return [a, b]
}

function range (from: number, to: number): number[] {
  const out: number[] = []
  for (let i = from; i <= to; i++) out.push(i)
  return out
}

const offsets = (events: Frame[]): number[] => events.map((e) => e.offset)

/** A cursor at the current top of each channel, from the history route of `base`. */
async function cursorAtTop (base: string, channels: string[]): Promise<string> {
  const cursor = new Map<string, { offset: number, epoch: string }>()
  for (const channel of channels) {
    const res = await fetch(`${base}/v1/channels/${channel}/events?limit=0`, { headers: { authorization: `Bearer ${token()}` } })
    assert.equal(res.status, 200)
    const body = await res.json() as { offset: number, epoch: string }
    cursor.set(channel, { offset: body.offset, epoch: body.epoch })
  }
  return encodeCursor(cursor)
}


test('a publish through A reaches WebSocket, SSE and long-poll clients on B (and on A) in order, exactly once', { skip }, async (t) => {
  const [a, b] = await twoNodes(t)
  const ch = 'mn:fanout'
  const N = 30
  const sinks: Array<{ name: string, events: () => Frame[], waitOffset: (o: number) => Promise<unknown> }> = []
  const polls: Array<Promise<{ events: Frame[], cursor: string }>> = []
  for (const [name, node] of [['A', a], ['B', b]] as const) {
    const ws = await WsClient.connect(node.wsUrl)
    t.after(() => ws.close())
    assert.equal((await ws.subscribe(ch)).offset, 0)
    sinks.push({ name: name + ' ws', events: () => ws.frames.filter((f) => f.type === 'event'), waitOffset: async (o) => await ws.waitFor((f) => f.type === 'event' && f.offset === o) })
    const sse = await SseClient.open(node.url, [ch])
    t.after(() => sse.close())
    await sse.waitFor((m) => m.data.type === 'subscribed')
    sinks.push({ name: name + ' sse', events: () => sse.events(ch), waitOffset: async (o) => await sse.waitFor((m) => m.data.type === 'event' && m.data.offset === o) })
    const start = await cursorAtTop(node.url, [ch])
    polls.push(pollLoop([node.url], [ch], start, (evs) => evs.some((e) => e.data.i === 'end')))
  }

  const results = await Promise.all(range(1, N).map(async (i) => await publish(a.url, ch, { i })))
  for (const r of results) assert.equal(r.status, 201)
  assert.deepEqual(results.map((r) => r.body.offset).sort((x, y) => x - y), range(1, N))
  const dataAt = new Map(results.map((r, k) => [r.body.offset, k + 1]))
  const expected = range(1, N).map((o) => [o, dataAt.get(o)])
  const sentinel = await publish(a.url, ch, { i: 'end' })
  assert.equal(sentinel.body.offset, N + 1)

  for (const sink of sinks) {
    await sink.waitOffset(N + 1)
    assert.deepEqual(sink.events().map((e) => [e.offset, e.data.i]), [...expected, [N + 1, 'end']], sink.name)
  }
  for (const [k, p] of polls.entries()) {
    const { events } = await p
    assert.deepEqual(events.map((e) => [e.offset, e.data.i]), [...expected, [N + 1, 'end']], `${k === 0 ? 'A' : 'B'} long-poll`)
  }
})

// Irregular pauses between publishes come from seeded PRNGs: a failing run replays with HERALD_TEST_SEED=<seed>.
const LP_SEED = testSeed(0x11a1b)
const SSE_SEED = testSeed(0x55e2)

test(`long-polls alternating A, B, A, B… with the returned cursor see every event once, in order, while publishing to both (seed ${LP_SEED})`, { skip }, async (t) => {
  const [a, b] = await twoNodes(t)
  const channels = ['mn:lp1', 'mn:lp2']
  const start = await cursorAtTop(b.url, channels)
  const N = 40
  const random = seededRandom(LP_SEED)
  const publisher = (async () => {
    for (let i = 0; i < N; i++) {
      const res = await publish(i % 2 === 0 ? a.url : b.url, channels[Math.floor(i / 2) % 2], { i })
      assert.equal(res.status, 201)
      if (i % 4 === 0) await sleep(randomInt(random, 20))
    }
  })()
  const { events, polls } = await pollLoop([a.url, b.url], channels, start,
    (evs) => evs.filter((e) => e.channel === channels[0]).length >= N / 2 && evs.filter((e) => e.channel === channels[1]).length >= N / 2)
  await publisher
  for (const [k, ch] of channels.entries()) {
    const mine = events.filter((e) => e.channel === ch)
    assert.deepEqual(offsets(mine), range(1, N / 2), ch)
    // channel k got publishes i with floor(i/2) % 2 === k, in that order
    assert.deepEqual(mine.map((e) => e.data.i), range(0, N - 1).filter((i) => Math.floor(i / 2) % 2 === k))
  }
  assert.ok(polls >= 4, `the polls went back and forth between the nodes (${polls} polls)`)
})

test(`SSE reconnects alternating between A and B with Last-Event-ID see every event once, in order (seed ${SSE_SEED})`, { skip }, async (t) => {
  const [a, b] = await twoNodes(t)
  const random = seededRandom(SSE_SEED)
  const channels = ['mn:sse1', 'mn:sse2']
  const N = 60
  const streams: SseClient[] = []
  t.after(() => { for (const s of streams) s.close() })

  let lastEventId: string | undefined
  const received: Frame[] = []
  let publisher: Promise<void> | undefined
  let round = 0
  while (received.length < N) {
    assert.ok(round < 40, 'too many rounds; received ' + JSON.stringify(offsets(received)))
    const node = round % 2 === 0 ? a : b
    const s = await SseClient.open(node.url, channels, { lastEventId })
    streams.push(s)
    await s.waitFor(() => s.messages.filter((m) => m.data.type === 'subscribed').length === channels.length)
    for (const m of s.messages.filter((x) => x.data.type === 'subscribed')) {
      assert.equal(m.data.recovered, lastEventId === undefined ? undefined : true, JSON.stringify(m.data))
    }
    publisher ??= (async () => {
      for (let i = 0; i < N; i++) {
        const res = await publish(i % 2 === 0 ? a.url : b.url, channels[i % 2], { i })
        assert.equal(res.status, 201)
        if (i % 3 === 0) await sleep(randomInt(random, 12))
      }
    })()
    const want = Math.min(received.length + 4, N)
    await until(() => received.length + s.events().length >= want, `round ${round}: events`, 5000)
    const snapshot = s.messages.length
    s.close()
    const seen = s.messages.slice(0, snapshot)
    received.push(...seen.map((m) => m.data).filter((f) => f.type === 'event'))
    lastEventId = seen.filter((m) => m.id !== undefined).at(-1)!.id
    round++
  }
  await publisher
  for (const [k, ch] of channels.entries()) {
    const mine = received.filter((e) => e.channel === ch)
    assert.deepEqual(offsets(mine), range(1, N / 2), ch)
    assert.deepEqual(mine.map((e) => e.data.i), range(0, N - 1).filter((i) => i % 2 === k))
  }
  assert.ok(round >= 4, `reconnected back and forth (${round} streams)`)
})

test('the stock eventsource client, cut off by node A, reconnects by itself to node B with Last-Event-ID and misses nothing', { skip }, async (t) => {
  const [a, b] = await twoNodes(t)
  const ch = 'mn:es'
  const requests: Array<{ node: string, lastEventId?: string }> = []
  const crossNode: FetchLike = async (input, init) => {
    // the first request goes to A, every reconnect to B (a load balancer without stickiness)
    const node = requests.length === 0 ? a : b
    const url = new URL(String(input))
    url.port = String(node.port)
    requests.push({ node: node === a ? 'A' : 'B', lastEventId: init.headers['Last-Event-ID'] })
    return await fetch(url, { ...init, headers: { ...init.headers, authorization: `Bearer ${token()}` } })
  }
  const es = new EventSource(`${a.url}/v1/sse?channel=${ch}`, { fetch: crossNode })
  t.after(() => es.close())
  const messages: Array<{ frame: Frame, lastEventId: string }> = []
  es.onmessage = (ev) => { messages.push({ frame: JSON.parse(ev.data), lastEventId: ev.lastEventId }) }
  const events = (): Frame[] => messages.map((m) => m.frame).filter((f) => f.type === 'event')

  await until(() => messages.some((m) => m.frame.type === 'subscribed'), 'subscribed on A')
  for (let i = 1; i <= 3; i++) assert.equal((await publish(i % 2 === 0 ? b.url : a.url, ch, { i })).status, 201)
  await until(() => events().length === 3, 'three events on A')
  const lastId = messages.at(-1)!.lastEventId
  assert.equal(decodeCursor(lastId, [ch]).get(ch)?.offset, 3)

  a.app.herald.connections.closeAll(1012, 'test: node A ends its streams')
  for (let i = 4; i <= 6; i++) assert.equal((await publish(i % 2 === 0 ? b.url : a.url, ch, { i })).status, 201)
  await until(() => messages.filter((m) => m.frame.type === 'subscribed').length === 2, 'resubscribed on B', 10_000)
  assert.deepEqual(requests, [{ node: 'A', lastEventId: undefined }, { node: 'B', lastEventId: lastId }])
  const resub = messages.filter((m) => m.frame.type === 'subscribed')[1].frame
  assert.deepEqual([resub.recovered, resub.offset, resub.replayed], [true, 3, 3])
  assert.equal((await publish(a.url, ch, { i: 7 })).status, 201)
  await until(() => events().length >= 7, 'seven events')
  // A barrier instead of a pause: once 8 is in, a late duplicate of anything before it would be in too.
  assert.equal((await publish(b.url, ch, { i: 8 })).status, 201)
  await until(() => events().some((e) => e.offset === 8), 'the barrier event')
  assert.deepEqual(events().map((e) => [e.offset, e.data.i]), range(1, 8).map((i) => [i, i]))
})

test('a WebSocket resumes on B from a position obtained on A', { skip }, async (t) => {
  const [a, b] = await twoNodes(t)
  const ch = 'mn:ws'
  const onA = await WsClient.connect(a.wsUrl)
  t.after(() => onA.close())
  await onA.subscribe(ch)
  for (let i = 1; i <= 4; i++) await publish(i % 2 === 0 ? b.url : a.url, ch, { i })
  await onA.events(ch, 4)
  const n = onA.frames.length
  onA.close()
  const last = onA.frames.slice(0, n).filter((f) => f.type === 'event').at(-1)!
  assert.equal(last.offset, 4)

  for (let i = 5; i <= 9; i++) await publish(i % 2 === 0 ? a.url : b.url, ch, { i })
  const onB = await WsClient.connect(b.wsUrl)
  t.after(() => onB.close())
  const sub = await onB.subscribe(ch, { offset: last.offset, epoch: last.epoch })
  assert.deepEqual([sub.recovered, sub.offset, sub.epoch, sub.replayed], [true, 4, last.epoch, 5])
  await publish(a.url, ch, { i: 10 })
  await onB.events(ch, 6)
  await publish(b.url, ch, { i: 11 })
  await onB.events(ch, 7)
  assert.deepEqual(onB.frames.filter((f) => f.type === 'event').map((e) => [e.offset, e.data.i]), range(5, 11).map((i) => [i, i]))
})

test('concurrent publishes to both nodes on one channel: every subscriber on both nodes sees the same single sequence 1..N', { skip }, async (t) => {
  const [a, b] = await twoNodes(t)
  const ch = 'mn:race'
  const nodes = { A: a, B: b }
  const views: Array<{ name: string, events: () => Frame[], waitOffset: (o: number) => Promise<unknown> }> = []
  const publishers: Record<string, WsClient> = {}
  for (const [name, node] of Object.entries(nodes)) {
    for (let k = 0; k < 2; k++) {
      const ws = await WsClient.connect(node.wsUrl)
      t.after(() => ws.close())
      await ws.subscribe(ch)
      views.push({ name: `${name} ws${k}`, events: () => ws.frames.filter((f) => f.type === 'event'), waitOffset: async (o) => await ws.waitFor((f) => f.type === 'event' && f.offset === o) })
    }
    const sse = await SseClient.open(node.url, [ch])
    t.after(() => sse.close())
    await sse.waitFor((m) => m.data.type === 'subscribed')
    views.push({ name: `${name} sse`, events: () => sse.events(ch), waitOffset: async (o) => await sse.waitFor((m) => m.data.type === 'event' && m.data.offset === o) })
    const pub = await WsClient.connect(node.wsUrl)
    t.after(() => pub.close())
    publishers[name] = pub
  }
  const pollStart = await cursorAtTop(a.url, [ch])

  // 20 REST publishes to each node and 10 WS publish frames on each node, all at once.
  const told = new Map<string, number>() // tag -> offset the publisher was told
  const rest = Object.entries(nodes).flatMap(([name, node]) => range(1, 20).map(async (i) => {
    const tag = `${name}-rest-${i}`
    const res = await publish(node.url, ch, { tag })
    assert.equal(res.status, 201)
    told.set(tag, res.body.offset)
  }))
  const frames = Object.entries(publishers).flatMap(([name, pub]) => range(1, 10).map(async (i) => {
    const tag = `${name}-ws-${i}`
    pub.send({ type: 'publish', channel: ch, data: { tag }, id: tag })
    const ack = await pub.waitFor((f) => f.id === tag)
    assert.equal(ack.type, 'ack', JSON.stringify(ack))
    told.set(tag, ack.offset)
  }))
  await Promise.all([...rest, ...frames])
  const N = 60
  assert.deepEqual([...told.values()].sort((x, y) => x - y), range(1, N), 'the bus handed out 1..N, each once')

  const polled = await pollLoop([b.url, a.url], [ch], pollStart, (evs) => evs.length >= N)
  const reference = range(1, N).map((o) => [...told.entries()].find(([, off]) => off === o)![0])
  assert.deepEqual(polled.events.map((e) => e.data.tag), reference, 'long-poll across both nodes')
  assert.deepEqual(offsets(polled.events), range(1, N))
  // A barrier instead of a pause: once N + 1 is in, a late duplicate of anything before it would be in too.
  const barrier = await publish(a.url, ch, { tag: 'barrier' })
  assert.equal(barrier.body.offset, N + 1)
  for (const view of views) {
    await view.waitOffset(N + 1)
    const evs = view.events()
    assert.deepEqual(offsets(evs), range(1, N + 1), view.name)
    assert.deepEqual(evs.map((e) => e.data.tag), [...reference, 'barrier'], view.name + ': each offset carries what its publisher was told')
    assert.equal(new Set(evs.map((e) => e.epoch)).size, 1)
  }
})

import assert from 'node:assert/strict'
import { EventSource, type FetchLike } from 'eventsource'
import { eachBus, startHerald, publish, poll, pollLoop, token, until, sleep, WsClient, SseClient, type Frame } from './helper.js'
import { withTimeout } from './support/process.js'
import { randomInt, seededRandom, testSeed } from './support/random.js'
import { encodeCursor, decodeCursor } from '../src/protocol/cursor.js'
import { EMPTY_EPOCH } from '../src/bus/broker.js'

// ---------------------------------------------------------------- local helpers

const SMALL_HISTORY = { history: { size: 5, ttlSeconds: 3600, metaTtlSeconds: 0, limitMax: 1000 } }

function range (from: number, to: number): number[] {
  const out: number[] = []
  for (let i = from; i <= to; i++) out.push(i)
  return out
}

const offsets = (events: Frame[]): number[] => events.map((e) => e.offset)

async function history (base: string, channel: string, query: Record<string, string | number> = {}): Promise<{ status: number, body: any }> {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)]))
  const res = await fetch(`${base}/v1/channels/${encodeURIComponent(channel)}/events?${qs.toString()}`, {
    headers: { authorization: `Bearer ${token()}` }
  })
  return { status: res.status, body: await res.json() }
}

/** A cursor positioned at the current top of each channel (read through the history route). */
async function cursorAtTop (base: string, channels: string[]): Promise<string> {
  const cursor = new Map<string, { offset: number, epoch: string }>()
  for (const channel of channels) {
    const { status, body } = await history(base, channel, { limit: 0 })
    assert.equal(status, 200)
    cursor.set(channel, { offset: body.offset, epoch: body.epoch })
  }
  return encodeCursor(cursor)
}

/** Publishes sequentially; returns the REST answers. */
async function publishSeq (base: string, channel: string, n: number, tag = 'x'): Promise<any[]> {
  const out = []
  for (let i = 0; i < n; i++) {
    const res = await publish(base, channel, { tag, i })
    assert.equal(res.status, 201, JSON.stringify(res.body))
    out.push(res.body)
  }
  return out
}

/** Event frames a WS client had received when `n` frames were recorded (what it saw before closing). */
function wsEventsUpTo (ws: WsClient, n: number, channel: string): Frame[] {
  return ws.frames.slice(0, n).filter((f) => f.type === 'event' && f.channel === channel)
}


// ---------------------------------------------------------------- WebSocket

eachBus('ws: a burst of 50 REST publishes on two interleaved channels arrives per channel in offset order, each once', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl })
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  const subA = await ws.subscribe('burst:a')
  const subB = await ws.subscribe('burst:b')
  assert.equal(subA.offset, 0)
  assert.equal(subB.offset, 0)

  const results = await Promise.all(range(0, 49).map(async (i) => await publish(url, i % 2 === 0 ? 'burst:a' : 'burst:b', { i })))
  for (const r of results) assert.equal(r.status, 201)
  // A sentinel after the burst: once it is in, nothing of the burst can still be on its way.
  const sentinels = [await publish(url, 'burst:a', { end: true }), await publish(url, 'burst:b', { end: true })]
  assert.deepEqual(sentinels.map((s) => s.body.offset), [26, 26])

  for (const [channel, sub] of [['burst:a', subA], ['burst:b', subB]] as const) {
    await ws.waitFor((f) => f.type === 'event' && f.channel === channel && f.data.end === true)
    const events = ws.frames.filter((f) => f.type === 'event' && f.channel === channel)
    assert.deepEqual(offsets(events), range(1, 26), channel + ': offsets in order, no gap, no duplicate')
    // Subscribed before its first event, the channel was at the empty position; its events carry the stream's epoch.
    assert.equal(sub.epoch, EMPTY_EPOCH)
    for (const e of events) assert.equal(e.epoch, events[0].epoch)
    for (const r of results) if (r.body.channel === channel) assert.equal(r.body.epoch, events[0].epoch)
    // Each event carries the data of the publish that was answered with its offset.
    const published = new Map<number, number>()
    results.forEach((r, i) => { if (r.body.channel === channel) published.set(r.body.offset, i) })
    assert.deepEqual(events.slice(0, 25).map((e) => e.data.i), events.slice(0, 25).map((e) => published.get(e.offset)))
  }
})

eachBus('ws: publish frames are acked with offset/epoch, a retried id is a duplicate delivered once, ping/pong, unsubscribe stops delivery', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl })
  const watcher = await WsClient.connect(wsUrl)
  const pub = await WsClient.connect(wsUrl)
  t.after(() => { watcher.close(); pub.close() })
  await watcher.subscribe('wsp:x')
  await watcher.subscribe('wsp:y')

  const ack = async (id: string, nth = 1): Promise<Frame> => {
    await pub.waitFor(() => pub.frames.filter((f) => f.id === id && (f.type === 'ack' || f.type === 'error')).length >= nth)
    return pub.frames.filter((f) => f.id === id && (f.type === 'ack' || f.type === 'error'))[nth - 1]
  }

  for (const id of ['p1', 'p2', 'p3']) pub.send({ type: 'publish', channel: 'wsp:x', data: { id }, id })
  const acks = [await ack('p1'), await ack('p2'), await ack('p3')]
  for (const [k, a] of acks.entries()) {
    assert.equal(a.type, 'ack')
    assert.equal(a.channel, 'wsp:x')
    assert.equal(a.offset, k + 1)
    assert.equal(a.epoch, acks[0].epoch)
    assert.equal(a.duplicate, false)
  }

  // A retry of p2 (same id, same content) answers the first result and publishes nothing.
  pub.send({ type: 'publish', channel: 'wsp:x', data: { id: 'p2' }, id: 'p2' })
  const retry = await ack('p2', 2)
  assert.deepEqual({ ...retry }, { type: 'ack', id: 'p2', channel: 'wsp:x', offset: 2, epoch: acks[0].epoch, duplicate: true })

  // The same id sent twice back to back: one publish, two acks (one per frame).
  pub.send({ type: 'publish', channel: 'wsp:x', data: { id: 'p4' }, id: 'p4' })
  pub.send({ type: 'publish', channel: 'wsp:x', data: { id: 'p4' }, id: 'p4' })
  const p4 = [await ack('p4'), await ack('p4', 2)]
  assert.deepEqual(p4.map((a) => a.offset), [4, 4])
  assert.deepEqual(p4.map((a) => a.duplicate).sort(), [false, true])

  pub.send({ type: 'publish', channel: 'wsp:x', data: { id: 'p5' }, id: 'p5' })
  assert.equal((await ack('p5')).offset, 5)
  await watcher.waitFor((f) => f.type === 'event' && f.offset === 5)
  const events = watcher.frames.filter((f) => f.type === 'event' && f.channel === 'wsp:x')
  assert.deepEqual(events.map((e) => [e.offset, e.data.id]), [[1, 'p1'], [2, 'p2'], [3, 'p3'], [4, 'p4'], [5, 'p5']])

  // ping -> pong with the same id, exactly once. Frames of one socket are answered in order: once the pong of a
  // second ping is in, a second answer to the first could only have come before it.
  pub.send({ type: 'ping', id: 'ping-1' })
  await pub.waitFor((f) => f.type === 'pong' && f.id === 'ping-1')
  pub.send({ type: 'ping', id: 'ping-2' })
  await pub.waitFor((f) => f.type === 'pong' && f.id === 'ping-2')
  assert.equal(pub.frames.filter((f) => f.id === 'ping-1').length, 1)
  // Exactly one answer per frame with an id.
  for (const [id, n] of [['p1', 1], ['p2', 2], ['p3', 1], ['p4', 2], ['p5', 1]] as const) {
    assert.equal(pub.frames.filter((f) => f.id === id).length, n, id)
  }

  // unsubscribe: `unsubscribed` + ack, and no more events of that channel
  const from = watcher.frames.length
  watcher.send({ type: 'unsubscribe', channel: 'wsp:x', id: 'u1' })
  const unsub = await watcher.waitFor((f) => f.type === 'unsubscribed', 5000, from)
  assert.equal(unsub.channel, 'wsp:x')
  assert.equal(unsub.reason, 'client')
  const uack = await watcher.waitFor((f) => f.id === 'u1', 5000, from)
  assert.deepEqual({ ...uack }, { type: 'ack', id: 'u1', channel: 'wsp:x' })
  assert.equal((await publish(url, 'wsp:x', { after: 'unsubscribe' })).body.offset, 6)
  // A publish on the still-subscribed channel, made after, is the barrier: anything of wsp:x would be in first.
  await publish(url, 'wsp:y', { barrier: true })
  await watcher.waitFor((f) => f.type === 'event' && f.channel === 'wsp:y')
  assert.equal(watcher.frames.filter((f) => f.type === 'event' && f.channel === 'wsp:x').length, 5)
  assert.equal(watcher.frames.filter((f) => f.id === 'u1').length, 1)
})

eachBus('ws: resume after a disconnect replays exactly the missed events, then continues live', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl })
  const ch = 'resume:1'
  const ws1 = await WsClient.connect(wsUrl)
  t.after(() => ws1.close())
  await ws1.subscribe(ch)
  await publishSeq(url, ch, 3, 'before')
  const seen = await ws1.events(ch, 3)
  const n = ws1.frames.length
  ws1.close()
  await ws1.waitClosed()
  const last = wsEventsUpTo(ws1, n, ch).at(-1)!
  assert.equal(last.offset, 3)

  const missed = await publishSeq(url, ch, 7, 'missed')
  assert.deepEqual(missed.map((m) => m.offset), range(4, 10))

  const ws2 = await WsClient.connect(wsUrl)
  t.after(() => ws2.close())
  const sub = await ws2.subscribe(ch, { offset: last.offset, epoch: last.epoch })
  assert.equal(sub.recovered, true)
  assert.equal(sub.replayed, 7)
  assert.equal(sub.offset, 3)
  assert.equal(sub.epoch, last.epoch)
  assert.equal(sub.reason, undefined)
  // the replay follows the `subscribed` frame directly
  const at = ws2.frames.indexOf(sub)
  assert.deepEqual(ws2.frames.slice(at + 1, at + 8).map((f) => [f.type, f.offset, f.data?.tag]), range(4, 10).map((o) => ['event', o, 'missed']))

  await publishSeq(url, ch, 2, 'live')
  await ws2.waitFor((f) => f.type === 'event' && f.offset === 12)
  const after = ws2.frames.filter((f) => f.type === 'event')
  assert.deepEqual(offsets(after), range(4, 12))
  assert.deepEqual(after.map((e) => e.data.tag), [...Array(7).fill('missed'), 'live', 'live'])
  // the subscribe frame's id is answered by exactly one ack, after the replay
  const acks = ws2.frames.filter((f) => f.type === 'ack')
  assert.equal(acks.length, 1)
  assert.equal(acks[0].channel, ch)
  assert.ok(ws2.frames.indexOf(acks[0]) > at + 7)
  assert.deepEqual(offsets(seen), [1, 2, 3])
})

eachBus('ws: resumes racing concurrent publishes are seamless (every event exactly once, in order)', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl })
  const ch = 'seam:1'
  const sockets: WsClient[] = []
  t.after(() => { for (const s of sockets) s.close() })
  let ws = await WsClient.connect(wsUrl)
  sockets.push(ws)
  await ws.subscribe(ch)

  let stop = false
  let count = 0
  const loops = range(1, 3).map(async (k) => {
    while (!stop && count < 900) {
      count++
      const res = await publish(url, ch, { k })
      assert.equal(res.status, 201)
    }
  })

  const received: Frame[] = []
  const rounds: Frame[] = []
  try {
    for (let round = 0; round < 8; round++) {
      const current = ws
      await current.waitFor(() => current.frames.filter((f) => f.type === 'event').length >= 3)
      const n = current.frames.length
      current.close()
      received.push(...wsEventsUpTo(current, n, ch))
      const last = received.at(-1)!
      ws = await WsClient.connect(wsUrl)
      sockets.push(ws)
      const sub = await ws.subscribe(ch, { offset: last.offset, epoch: last.epoch })
      rounds.push(sub)
      assert.equal(sub.recovered, true, JSON.stringify(sub))
      assert.equal(sub.offset, last.offset)
    }
  } finally {
    stop = true
    await Promise.all(loops)
  }
  const top = count
  const sentinel = await publish(url, ch, { sentinel: true })
  assert.equal(sentinel.body.offset, top + 1)
  await ws.waitFor((f) => f.type === 'event' && f.offset === top + 1)
  received.push(...ws.frames.filter((f) => f.type === 'event'))
  assert.deepEqual(offsets(received), range(1, top + 1), 'the concatenation of all sockets is 1..top, once each')
  assert.ok(rounds.some((r) => r.replayed > 0), 'some resume actually replayed events: ' + JSON.stringify(rounds.map((r) => r.replayed)))
})

eachBus('ws: unknown epoch, trimmed history and an offset ahead answer recovered:false with the reason, then continue live', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: SMALL_HISTORY })
  const ch = 'rec:1'
  const clients: WsClient[] = []
  t.after(() => { for (const c of clients) c.close() })
  const connect = async (): Promise<WsClient> => { const c = await WsClient.connect(wsUrl); clients.push(c); return c }

  const first = await publishSeq(url, ch, 2)
  const epoch = first[0].epoch

  // unknown epoch
  const a = await connect()
  const subA = await a.subscribe(ch, { offset: 2, epoch: 'not-this-epoch' })
  assert.deepEqual({ ...subA }, { type: 'subscribed', channel: ch, offset: 2, epoch, recovered: false, reason: 'epoch_changed', replayed: 0 })
  await publish(url, ch, { live: 'a' })
  await a.waitFor((f) => f.type === 'event')
  assert.deepEqual(offsets(a.frames.filter((f) => f.type === 'event')), [3])

  // exactly as many missed events as history holds: still recovered
  await publishSeq(url, ch, 5) // top 8
  const b = await connect()
  const subB = await b.subscribe(ch, { offset: 3, epoch })
  assert.equal(subB.recovered, true)
  assert.equal(subB.replayed, 5)
  await b.events(ch, 5)
  assert.deepEqual(offsets(b.frames.filter((f) => f.type === 'event')), range(4, 8))

  // 20 missed with a history of 5: trimmed, continue from the top
  await publishSeq(url, ch, 20) // top 28
  const c = await connect()
  const subC = await c.subscribe(ch, { offset: 8, epoch })
  assert.deepEqual({ ...subC }, { type: 'subscribed', channel: ch, offset: 28, epoch, recovered: false, reason: 'history_trimmed', replayed: 0 })
  // one more than history holds
  const c2 = await connect()
  const subC2 = await c2.subscribe(ch, { offset: 22, epoch })
  assert.equal(subC2.reason, 'history_trimmed')
  await publishSeq(url, ch, 2, 'after-trim') // 29, 30
  await c.events(ch, 2)
  await c2.events(ch, 2)
  assert.deepEqual(c.frames.filter((f) => f.type === 'event').map((e) => [e.offset, e.data.tag]), [[29, 'after-trim'], [30, 'after-trim']])
  assert.deepEqual(offsets(c2.frames.filter((f) => f.type === 'event')), [29, 30])

  // ahead of the top
  const d = await connect()
  const subD = await d.subscribe(ch, { offset: 99, epoch })
  assert.deepEqual({ ...subD }, { type: 'subscribed', channel: ch, offset: 30, epoch, recovered: false, reason: 'offset_ahead', replayed: 0 })
  await publish(url, ch, { live: 'd' })
  await d.waitFor((f) => f.type === 'event')
  assert.deepEqual(offsets(d.frames.filter((f) => f.type === 'event')), [31])
})

// ---------------------------------------------------------------- SSE

eachBus('sse: a burst on two interleaved channels arrives per channel in order, once, each id carrying both positions', async (t, bus) => {
  const { url } = await startHerald(t, { redisUrl: bus.redisUrl })
  const sse = await SseClient.open(url, ['sb:a', 'sb:b'])
  t.after(() => sse.close())
  await sse.waitFor(() => sse.messages.filter((m) => m.data.type === 'subscribed').length === 2)
  const results = await Promise.all(range(0, 49).map(async (i) => await publish(url, i % 2 === 0 ? 'sb:a' : 'sb:b', { i })))
  for (const r of results) assert.equal(r.status, 201)
  await publish(url, 'sb:a', { end: true })
  await publish(url, 'sb:b', { end: true })
  await sse.waitFor((m) => m.data.channel === 'sb:a' && m.data.data?.end === true)
  await sse.waitFor((m) => m.data.channel === 'sb:b' && m.data.data?.end === true)
  for (const ch of ['sb:a', 'sb:b']) {
    assert.deepEqual(offsets(sse.events(ch)), range(1, 26), ch)
    const published = new Map<number, number>()
    results.forEach((r, i) => { if (r.body.channel === ch) published.set(r.body.offset, i) })
    assert.deepEqual(sse.events(ch).slice(0, 25).map((e) => e.data.i), sse.events(ch).slice(0, 25).map((e) => published.get(e.offset)))
  }
  // Every event's id is a cursor whose own channel sits exactly at that event, and the other is never ahead.
  const pos: Record<string, number> = { 'sb:a': 0, 'sb:b': 0 }
  for (const m of sse.messages.filter((x) => x.data.type === 'event')) {
    assert.ok(m.id !== undefined)
    const cursor = decodeCursor(m.id, ['sb:a', 'sb:b'])
    pos[m.data.channel] = m.data.offset
    assert.deepEqual(cursor.get(m.data.channel), { offset: m.data.offset, epoch: m.data.epoch })
    const other = m.data.channel === 'sb:a' ? 'sb:b' : 'sb:a'
    assert.equal(cursor.get(other)?.offset, pos[other])
  }
})

eachBus('sse: resume via Last-Event-ID and via ?cursor= replays exactly the missed events, on every channel of the cursor', async (t, bus) => {
  const { url } = await startHerald(t, { redisUrl: bus.redisUrl })
  const streams: SseClient[] = []
  t.after(() => { for (const s of streams) s.close() })
  const open = async (channels: string[], opts: { lastEventId?: string, cursor?: string } = {}): Promise<SseClient> => {
    const s = await SseClient.open(url, channels, opts)
    streams.push(s)
    await s.waitFor(() => s.messages.filter((m) => m.data.type === 'subscribed').length === channels.length)
    return s
  }
  /** Closes, keeping only what had arrived: returns the id a reconnecting client would send. */
  const closeAt = (s: SseClient): string => {
    const snapshot = s.messages.length
    s.close()
    s.messages.splice(snapshot)
    return s.lastEventId!
  }

  const s1 = await open(['sr:a', 'sr:b'])
  await publishSeq(url, 'sr:a', 3, 'a1')
  await publishSeq(url, 'sr:b', 2, 'b1')
  await s1.waitEvents('sr:a', 3)
  await s1.waitEvents('sr:b', 2)
  const id1 = closeAt(s1)
  assert.deepEqual([...decodeCursor(id1, ['sr:a', 'sr:b']).entries()].map(([c, p]) => [c, p.offset]).sort(), [['sr:a', 3], ['sr:b', 2]])

  await publishSeq(url, 'sr:a', 4, 'a2') // 4..7
  await publishSeq(url, 'sr:b', 3, 'b2') // 3..5

  // Last-Event-ID header: both channels resume
  const s2 = await open(['sr:a', 'sr:b'], { lastEventId: id1 })
  const subs2 = s2.messages.filter((m) => m.data.type === 'subscribed').map((m) => m.data)
  assert.deepEqual(subs2.map((s) => [s.channel, s.recovered, s.offset, s.replayed]).sort(), [['sr:a', true, 3, 4], ['sr:b', true, 2, 3]])
  await s2.waitEvents('sr:a', 4)
  await s2.waitEvents('sr:b', 3)
  await publish(url, 'sr:a', { tag: 'a3' }) // 8, live
  await s2.waitEvents('sr:a', 5)
  assert.deepEqual(offsets(s2.events('sr:a')), range(4, 8))
  assert.deepEqual(s2.events('sr:a').map((e) => e.data.tag), ['a2', 'a2', 'a2', 'a2', 'a3'])
  assert.deepEqual(offsets(s2.events('sr:b')), range(3, 5))
  const id2 = closeAt(s2)

  await publishSeq(url, 'sr:a', 2, 'a4') // 9, 10
  await publishSeq(url, 'sr:b', 1, 'b4') // 6

  // ?cursor= query: the same
  const s3 = await open(['sr:a', 'sr:b'], { cursor: id2 })
  await s3.waitEvents('sr:a', 2)
  await s3.waitEvents('sr:b', 1)
  await publish(url, 'sr:b', { tag: 'b5' }) // 7
  await s3.waitEvents('sr:b', 2)
  await publish(url, 'sr:a', { tag: 'a5' }) // 11
  await s3.waitEvents('sr:a', 3)
  assert.deepEqual(offsets(s3.events('sr:a')), [9, 10, 11])
  assert.deepEqual(offsets(s3.events('sr:b')), [6, 7])
  assert.ok(s3.messages.filter((m) => m.data.type === 'subscribed').every((m) => m.data.recovered === true))

  // a cursor that knows one channel only: that one resumes, the other starts at the top
  const onlyA = encodeCursor(new Map([['sr:a', decodeCursor(id2, ['sr:a']).get('sr:a')!]]))
  const s4 = await open(['sr:a', 'sr:b'], { cursor: onlyA })
  const subs4 = Object.fromEntries(s4.messages.filter((m) => m.data.type === 'subscribed').map((m) => [m.data.channel, m.data]))
  assert.equal(subs4['sr:a'].recovered, true)
  assert.equal(subs4['sr:a'].replayed, 3)
  assert.equal(subs4['sr:b'].recovered, undefined)
  assert.equal(subs4['sr:b'].offset, 7)
  await s4.waitEvents('sr:a', 3)
  assert.deepEqual(offsets(s4.events('sr:a')), [9, 10, 11])
  assert.deepEqual(s4.events('sr:b'), [])
})

eachBus('sse: the stock eventsource client reconnects by itself with Last-Event-ID = the last id and resumes exactly', async (t, bus) => {
  const { app, url } = await startHerald(t, { redisUrl: bus.redisUrl })
  const ch = 'es:1'
  const requests: Array<string | undefined> = []
  const withAuth = (lastEventId?: string): FetchLike => async (input, init) => {
    const headers: Record<string, string> = { ...init.headers, authorization: `Bearer ${token()}` }
    if (lastEventId !== undefined) headers['Last-Event-ID'] = lastEventId
    requests.push(headers['Last-Event-ID'])
    return await fetch(input, { ...init, headers })
  }
  const messages: Array<{ frame: Frame, lastEventId: string }> = []
  const sources: EventSource[] = []
  t.after(() => { for (const s of sources) s.close() })
  const openEs = (lastEventId?: string): EventSource => {
    const es = new EventSource(`${url}/v1/sse?channel=${ch}`, { fetch: withAuth(lastEventId) })
    es.onmessage = (ev) => { messages.push({ frame: JSON.parse(ev.data), lastEventId: ev.lastEventId }) }
    sources.push(es)
    return es
  }
  const eventsOf = (): Frame[] => messages.map((m) => m.frame).filter((f) => f.type === 'event')

  const es = openEs()
  await until(() => messages.some((m) => m.frame.type === 'subscribed'), 'first subscribed')
  await publishSeq(url, ch, 3, 'first')
  await until(() => eventsOf().length === 3, 'three events')
  const lastId = messages.filter((m) => m.lastEventId !== '').at(-1)!.lastEventId
  assert.equal(lastId, messages.at(-1)!.lastEventId, 'the last message carried the id')
  assert.deepEqual(decodeCursor(lastId, [ch]).get(ch)?.offset, 3)

  // The server ends the stream; the stock client reconnects on its own (retry: 1000) with Last-Event-ID.
  app.herald.connections.closeAll(1012, 'test: server ends the stream')
  await publishSeq(url, ch, 2, 'gap') // 4, 5 while it is away
  await until(() => messages.filter((m) => m.frame.type === 'subscribed').length === 2, 'the reconnect subscribed', 10_000)
  assert.equal(requests.length, 2)
  assert.equal(requests[0], undefined)
  assert.equal(requests[1], lastId, 'reconnect sent Last-Event-ID = id of the last message')
  const resub = messages.filter((m) => m.frame.type === 'subscribed')[1].frame
  assert.equal(resub.recovered, true)
  assert.equal(resub.replayed, 2)
  await publish(url, ch, { tag: 'live' }) // 6
  await until(() => eventsOf().length >= 6, 'six events')
  assert.deepEqual(offsets(eventsOf()), range(1, 6))
  assert.deepEqual(eventsOf().map((e) => e.data.tag), ['first', 'first', 'first', 'gap', 'gap', 'live'])
  assert.ok(messages.some((m) => m.frame.type === 'disconnect' && m.frame.reconnect === true))

  // A brand-new EventSource given that id (custom fetch sets Last-Event-ID) resumes exactly after it.
  es.close()
  const id6 = messages.filter((m) => m.lastEventId !== '').at(-1)!.lastEventId
  assert.equal(decodeCursor(id6, [ch]).get(ch)?.offset, 6)
  const before = messages.length
  await publishSeq(url, ch, 2, 'closed') // 7, 8
  openEs(id6)
  await until(() => messages.slice(before).filter((m) => m.frame.type === 'event').length === 2, 'replay after new EventSource')
  await publish(url, ch, { tag: 'live2' }) // 9
  await until(() => messages.slice(before).filter((m) => m.frame.type === 'event').length === 3, 'live after new EventSource')
  // A barrier instead of a pause: once 10 is in, a duplicate or stray event before it would be in too.
  await publish(url, ch, { tag: 'barrier' }) // 10
  await until(() => messages.some((m) => m.frame.type === 'event' && m.frame.offset === 10), 'the barrier event')
  assert.deepEqual(messages.slice(before).filter((m) => m.frame.type === 'event').map((m) => [m.frame.offset, m.frame.data.tag]), [[7, 'closed'], [8, 'closed'], [9, 'live2'], [10, 'barrier']])
  assert.equal(requests.at(-1), id6)
})

eachBus('sse: an unknown epoch, trimmed history or offset ahead yields `subscribed` recovered:false, then live events', async (t, bus) => {
  const { url } = await startHerald(t, { redisUrl: bus.redisUrl, config: SMALL_HISTORY })
  const ch = 'sbad:1'
  const streams: SseClient[] = []
  t.after(() => { for (const s of streams) s.close() })
  const s1 = await SseClient.open(url, [ch])
  streams.push(s1)
  await s1.waitFor((m) => m.data.type === 'subscribed')
  const [{ epoch }] = await publishSeq(url, ch, 1)
  await s1.waitEvents(ch, 1)
  const id1 = s1.lastEventId!
  s1.close()
  await publishSeq(url, ch, 20) // top 21, history holds 17..21

  const cases: Array<[string, { lastEventId?: string, cursor?: string }, string]> = [
    ['history_trimmed', { lastEventId: id1 }, 'trimmed'],
    ['epoch_changed', { cursor: encodeCursor(new Map([[ch, { offset: 21, epoch: 'some-other-epoch' }]])) }, 'epoch'],
    ['offset_ahead', { lastEventId: encodeCursor(new Map([[ch, { offset: 500, epoch }]])) }, 'ahead']
  ]
  const opened: SseClient[] = []
  for (const [reason, opts] of cases) {
    const s = await SseClient.open(url, [ch], opts)
    streams.push(s)
    opened.push(s)
    const sub = await s.waitFor((m) => m.data.type === 'subscribed')
    assert.deepEqual({ ...sub.data }, { type: 'subscribed', channel: ch, offset: 21, epoch, recovered: false, reason, replayed: 0 })
    assert.deepEqual(decodeCursor(sub.id!, [ch]).get(ch), { offset: 21, epoch }, 'its id continues from the top')
  }
  await publish(url, ch, { tag: 'next' }) // 22
  await publish(url, ch, { tag: 'barrier' }) // 23: anything replayed or repeated would come before it
  for (const s of opened) {
    await s.waitFor((m) => m.data.type === 'event' && m.data.offset === 23)
    assert.deepEqual(s.events(ch).map((e) => [e.offset, e.data.tag]), [[22, 'next'], [23, 'barrier']])
  }
})

// ---------------------------------------------------------------- long-poll

/*
 * "Answered at once" is shown by cause, not by the clock: such a poll asks for a timeout (LONG_POLL_TIMEOUT) far
 * longer than the failure bound it is awaited with (ANSWER_BOUND_MS), so an answer that comes at all was caused
 * by the events (or the recovery notice), never by its timeout. The bound only says when to call it a hang.
 */
const LONG_POLL_TIMEOUT = 25 // seconds (POLL_TIMEOUT_MAX is 30 by default)
const ANSWER_BOUND_MS = 15_000

async function answered<T> (pending: Promise<T>, what: string): Promise<T> {
  return await withTimeout(pending, ANSWER_BOUND_MS, `${what} (its own timeout is ${LONG_POLL_TIMEOUT} s)`)
}

const POLL_SEED = testSeed(0x70113)

eachBus(`poll: consecutive polls with the returned cursor see every event exactly once, in order, while publishing (seed ${POLL_SEED})`, async (t, bus) => {
  const { url } = await startHerald(t, { redisUrl: bus.redisUrl })
  const channels = ['lp:a', 'lp:b']
  const start = await cursorAtTop(url, channels)
  const N = 30
  // Irregular pauses between publishes, from a seeded PRNG: a failing run replays with HERALD_TEST_SEED=<seed>.
  const random = seededRandom(POLL_SEED)
  const publisher = (async () => {
    for (let i = 0; i < N; i++) {
      const res = await publish(url, channels[i % 2], { i })
      assert.equal(res.status, 201)
      if (i % 3 === 0) await sleep(randomInt(random, 15))
    }
  })()
  const { events, polls } = await pollLoop([url], channels, start, (evs) => evs.filter((e) => e.channel === 'lp:a').length >= N / 2 && evs.filter((e) => e.channel === 'lp:b').length >= N / 2)
  await publisher
  for (const ch of channels) {
    const mine = events.filter((e) => e.channel === ch)
    assert.deepEqual(offsets(mine), range(1, N / 2), ch)
    assert.deepEqual(mine.map((e) => e.data.i), range(1, N / 2).map((k) => (k - 1) * 2 + (ch === 'lp:a' ? 0 : 1)))
  }
  assert.ok(polls >= 2, 'more than one poll was needed: ' + polls)
})

eachBus('poll: a first poll without cursor starts at the current end, even with timeout=0', async (t, bus) => {
  const { url } = await startHerald(t, { redisUrl: bus.redisUrl })
  // timeout=1, then timeout=0 on fresh channels (not yet subscribed anywhere on the node) a few times over
  for (const [ch, timeout] of [['lpf:1', 1], ...range(1, 5).map((k) => [`lpf:0-${k}`, 0])] as Array<[string, number]>) {
    await publishSeq(url, ch, 2, 'old')
    const first = await poll(url, [ch], { timeout })
    assert.equal(first.status, 200)
    assert.deepEqual(first.body.events, [], 'events from before the first poll are not returned')
    await publish(url, ch, { tag: 'new' }) // offset 3, after the first answer
    // Answered by that event, not by its timeout (see ANSWER_BOUND_MS).
    const next = await answered(poll(url, [ch], { cursor: first.body.cursor, timeout: LONG_POLL_TIMEOUT }), `timeout=${timeout}: the next poll answered by the waiting event`)
    assert.equal(next.status, 200)
    assert.deepEqual(next.body.events.map((e: Frame) => [e.offset, e.data.tag]), [[3, 'new']],
      `timeout=${timeout}: the event published after the first answer is the next poll's (first cursor ${JSON.stringify([...decodeCursor(first.body.cursor, [ch])])})`)
  }
})

eachBus('poll: with timeout=0 (a short poll) the events already after the cursor are returned', async (t, bus) => {
  const { url } = await startHerald(t, { redisUrl: bus.redisUrl })
  for (const ch of ['lpz:1', 'lpz:2', 'lpz:3']) {
    const start = await cursorAtTop(url, [ch])
    await publishSeq(url, ch, 3)
    const res = await poll(url, [ch], { cursor: start, timeout: 0 })
    assert.equal(res.status, 200)
    assert.deepEqual(offsets(res.body.events), [1, 2, 3], ch)
    assert.deepEqual(decodeCursor(res.body.cursor, [ch]).get(ch)?.offset, 3)
    const again = await poll(url, [ch], { cursor: res.body.cursor, timeout: 0 })
    assert.deepEqual(again.body.events, [])
    assert.equal(again.body.cursor, res.body.cursor)
  }
})

eachBus('poll: answers at once when events are waiting, empty after its timeout, and the timeout is capped by pollTimeoutMax', async (t, bus) => {
  const { app, url } = await startHerald(t, { redisUrl: bus.redisUrl })
  const ch = 'lpt:1'
  const start = await cursorAtTop(url, [ch])
  await publishSeq(url, ch, 3)

  // Events waiting: answered with them, by them (see ANSWER_BOUND_MS).
  const ready = await answered(poll(url, [ch], { cursor: start, timeout: LONG_POLL_TIMEOUT }), 'a poll with events waiting')
  assert.deepEqual(offsets(ready.body.events), [1, 2, 3])

  // Nothing waiting: an empty answer, no earlier than its timeout (a lower bound: a slow machine only answers later).
  let t0 = Date.now()
  const empty = await withTimeout(poll(url, [ch], { cursor: ready.body.cursor, timeout: 1 }), ANSWER_BOUND_MS, 'an empty poll (timeout=1) to be answered')
  const emptyMs = Date.now() - t0
  assert.equal(empty.status, 200)
  assert.deepEqual(empty.body.events, [])
  assert.ok(emptyMs >= 900, `empty answer after ${emptyMs} ms, before its 1 s timeout`)
  assert.deepEqual(decodeCursor(empty.body.cursor, [ch]).get(ch)?.offset, 3, 'an empty answer keeps the position')

  // A waiting poll is answered by a publish: published once the poll waits on the node (it then counts as a
  // long-poll connection), and answered by it, not by its timeout (see ANSWER_BOUND_MS).
  const waiting = poll(url, [ch], { cursor: empty.body.cursor, timeout: LONG_POLL_TIMEOUT })
  await until(() => app.herald.connections.count('long-poll') === 1, 'the poll is waiting on the node')
  await publish(url, ch, { tag: 'wake' })
  const woke = await answered(waiting, 'the waiting poll woken by the publish')
  assert.deepEqual(woke.body.events.map((e: Frame) => [e.offset, e.data.tag]), [[4, 'wake']])

  // Capped: asking for an hour with pollTimeoutMax=1, the empty answer comes after the cap (a lower bound), and
  // comes at all within the failure bound — which an uncapped hour-long wait could not.
  const capped = await startHerald(t, { redisUrl: bus.redisUrl, config: { pollTimeoutMax: 1 } })
  const c = await cursorAtTop(capped.url, ['lpt:2'])
  t0 = Date.now()
  const res = await withTimeout(poll(capped.url, ['lpt:2'], { cursor: c, timeout: 3600 }), ANSWER_BOUND_MS, 'timeout=3600 with pollTimeoutMax=1 to be answered at the cap')
  const cappedMs = Date.now() - t0
  assert.equal(res.status, 200)
  assert.deepEqual(res.body.events, [])
  assert.ok(cappedMs >= 900, `timeout=3600 with pollTimeoutMax=1 answered after ${cappedMs} ms, before the 1 s cap`)
})

eachBus('poll: a trimmed or foreign-epoch resume answers at once with `recovery`, then continues from the top', async (t, bus) => {
  // No lingering session: each poll resumes from its cursor alone (one that lingered would still hold the events).
  const { url } = await startHerald(t, { redisUrl: bus.redisUrl, config: { ...SMALL_HISTORY, pollLingerSeconds: 0 } })
  const ch = 'lpr:1'
  const start = await cursorAtTop(url, [ch])
  await publishSeq(url, ch, 2)
  const got = await poll(url, [ch], { cursor: start, timeout: 2 })
  assert.deepEqual(offsets(got.body.events), [1, 2])
  const [{ epoch }] = await publishSeq(url, ch, 20) // top 22

  // Answered by the recovery notice, not by its timeout (see ANSWER_BOUND_MS).
  const trimmed = await answered(poll(url, [ch], { cursor: got.body.cursor, timeout: LONG_POLL_TIMEOUT }), 'a trimmed resume')
  assert.deepEqual(trimmed.body.recovery, [{ channel: ch, recovered: false, reason: 'history_trimmed', offset: 22, epoch }])
  assert.deepEqual(trimmed.body.events, [])
  assert.deepEqual(decodeCursor(trimmed.body.cursor, [ch]).get(ch), { offset: 22, epoch })

  await publish(url, ch, { tag: 'after' }) // 23
  const next = await poll(url, [ch], { cursor: trimmed.body.cursor, timeout: 2 })
  assert.deepEqual(next.body.events.map((e: Frame) => [e.offset, e.data.tag]), [[23, 'after']])
  assert.equal(next.body.recovery, undefined)

  const foreign = await answered(poll(url, [ch], { cursor: encodeCursor(new Map([[ch, { offset: 3, epoch: 'elsewhere' }]])), timeout: LONG_POLL_TIMEOUT }), 'a foreign-epoch resume')
  assert.deepEqual(foreign.body.recovery, [{ channel: ch, recovered: false, reason: 'epoch_changed', offset: 23, epoch }])
  assert.deepEqual(foreign.body.events, [])
})

// ---------------------------------------------------------------- history

eachBus('history: since/limit select the events after `since`; `truncated` tells when history no longer reaches back', async (t, bus) => {
  const { url } = await startHerald(t, { redisUrl: bus.redisUrl })
  const ch = 'hist:1'
  const sent = await publishSeq(url, ch, 10)
  const epoch = sent[0].epoch

  const all = await history(url, ch)
  assert.equal(all.status, 200)
  assert.deepEqual({ ...all.body, events: undefined }, { channel: ch, epoch, offset: 10, earliest: 1, truncated: false, events: undefined })
  assert.deepEqual(offsets(all.body.events), range(1, 10))
  assert.deepEqual(all.body.events.map((e: Frame) => e.data.i), range(0, 9))
  for (const e of all.body.events) assert.equal(e.type, 'event')

  assert.deepEqual(offsets((await history(url, ch, { since: 3, limit: 4 })).body.events), [4, 5, 6, 7])
  assert.deepEqual(offsets((await history(url, ch, { since: 8 })).body.events), [9, 10])
  const atTop = await history(url, ch, { since: 10 })
  assert.deepEqual(atTop.body.events, [])
  assert.equal(atTop.body.truncated, false)
  const none = await history(url, ch, { limit: 0 })
  assert.deepEqual([none.body.events, none.body.offset], [[], 10])

  const small = await startHerald(t, { redisUrl: bus.redisUrl, config: { ...SMALL_HISTORY, redisPrefix: 'herald-small' } })
  await publishSeq(small.url, ch, 12)
  const trimmed = await history(small.url, ch)
  assert.deepEqual([trimmed.body.offset, trimmed.body.earliest, trimmed.body.truncated], [12, 8, true])
  assert.deepEqual(offsets(trimmed.body.events), range(8, 12))
  const from7 = await history(small.url, ch, { since: 7 })
  assert.deepEqual([offsets(from7.body.events), from7.body.truncated], [range(8, 12), false])
  const from6 = await history(small.url, ch, { since: 6, limit: 2 })
  assert.deepEqual([offsets(from6.body.events), from6.body.truncated], [[8, 9], true])

  const tooMany = await history(small.url, ch, { limit: 1001 })
  assert.equal(tooMany.status, 400)
  assert.equal(tooMany.body.code, 'HERALD_ERR_VALIDATION')
})

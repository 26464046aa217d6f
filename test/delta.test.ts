import assert from 'node:assert/strict'
import { test } from 'node:test'
import WS from 'ws'
import { createClient, type HeraldEvent, type WebSocketConstructor } from '../client/index.js'
import { Namespaces } from '../src/namespaces.js'
import { eachBus, poll, publish, SseClient, startHerald, token, until, WsClient, type Frame } from './helper.js'

// Delta delivery (namespace option `delta`, asked for per subscription): live events after the first may carry a
// JSON Patch of the previous event's data; resume, history and long-poll always give whole events; the client
// library applies the patches so the application sees exactly what was published. Real servers, real clients.

/** `{"n":{"n":…{"leaf":x}}}`, `depth` levels deep, with some bulk at the top so that a patch would be smaller. */
function nested (depth: number, leaf: string): unknown {
  let value: unknown = { leaf }
  for (let i = 0; i < depth; i++) value = { n: value }
  return { bulk: 'b'.repeat(400), tree: value }
}

const NAMESPACES = { namespaces: { doc: { delta: true }, plain: {} }, unknown: 'refuse' as const }

/** A large document (about 6 KB) that changes a little each time. */
function documentAt (n: number): Record<string, unknown> {
  const rows = Array.from({ length: 60 }, (_, i) => ({ id: i, name: `row ${i}`, price: 100 + i, note: 'unchanged text '.repeat(4) }))
  rows[n % 60].price = 1000 + n
  return { version: n, title: 'Quarterly board', updated: `t${n}`, rows }
}

eachBus('delta delivery: patches after the first event on WebSocket and SSE; the client library rebuilds every document exactly', async (t, bus) => {
  const h = await startHerald(t, { redisUrl: bus.redisUrl, config: { namespaces: NAMESPACES } })
  const ws = await WsClient.connect(h.wsUrl)
  ws.send({ type: 'subscribe', channel: 'doc:board', delta: true, id: 's' })
  const subscribed = await ws.waitFor((f) => f.type === 'subscribed')
  assert.equal(subscribed.delta, true)
  const plain = await WsClient.connect(h.wsUrl)
  await plain.subscribe('doc:board') // did not ask: whole events
  const sse = await SseClient.open(h.url + '', ['doc:board'], { cursor: undefined })
  const sseDelta = await (async () => {
    const qs = new URLSearchParams([['channel', 'doc:board'], ['delta', 'doc:board']])
    const res = await fetch(`${h.url}/v1/sse?${qs.toString()}`, { headers: { authorization: 'Bearer ' + token(), accept: 'text/event-stream' } })
    assert.equal(res.status, 200)
    return res
  })()
  const sseFrames: Frame[] = []
  void (async () => {
    const decoder = new TextDecoder()
    let buffer = ''
    for await (const chunk of sseDelta.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true })
      let at
      while ((at = buffer.indexOf('\n\n')) !== -1) {
        const block = buffer.slice(0, at)
        buffer = buffer.slice(at + 2)
        const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n')
        if (data !== '') sseFrames.push(JSON.parse(data) as Frame)
      }
    }
  })().catch(() => {})
  await until(() => sseFrames.some((f) => f.type === 'subscribed'), 'the SSE delta stream is subscribed')
  // The client library on every transport (long-poll gets whole events; the others patches).
  const seenBy: Record<string, HeraldEvent[]> = {}
  for (const transport of ['websocket', 'sse', 'long-poll'] as const) {
    const seen: HeraldEvent[] = seenBy[transport] = []
    const c = createClient({ url: h.url, token: token(), WebSocket: WS as unknown as WebSocketConstructor, transports: [transport] })
    t.after(() => c.close())
    const sub = c.subscribe('doc:board', { delta: true })
    sub.on('event', (e) => seen.push(e))
    await until(() => sub.state === 'subscribed', `client (${transport}) subscribed`)
  }

  for (let n = 1; n <= 6; n++) assert.equal((await publish(h.url, 'doc:board', documentAt(n))).status, 201)
  const frames = await ws.events('doc:board', 6)
  assert.equal(frames[0].delta, undefined, 'the first event goes whole')
  for (const f of frames.slice(1)) {
    assert.equal(f.delta, true)
    assert.ok(Array.isArray(f.data) && f.data.length <= 4, `a small patch: ${JSON.stringify(f.data)}`)
  }
  const wholeBytes = frames.slice(1).reduce((n, f) => n + JSON.stringify(documentAt(f.offset)).length, 0)
  const deltaBytes = frames.slice(1).reduce((n, f) => n + JSON.stringify(f.data).length, 0)
  assert.ok(deltaBytes * 20 < wholeBytes, `patches are a small part of the documents (${deltaBytes} vs ${wholeBytes} bytes)`)
  assert.ok((await plain.events('doc:board', 6)).every((f) => f.delta === undefined), 'a subscriber that did not ask gets whole events')
  assert.ok((await sse.waitEvents('doc:board', 6)).every((f) => f.delta === undefined))
  await until(() => sseFrames.filter((f) => f.type === 'event').length === 6, 'six SSE delta events')
  assert.deepEqual(sseFrames.filter((f) => f.type === 'event').map((f) => f.delta === true), [false, true, true, true, true, true])
  for (const [transport, seen] of Object.entries(seenBy)) {
    await until(() => seen.length === 6, `the client library (${transport}) has six events`)
    assert.deepEqual(seen.map((e) => e.data), [1, 2, 3, 4, 5, 6].map(documentAt), `the client (${transport}) rebuilt each document exactly`)
  }

  // A resume from the first event replays whole events; history and long-poll are always whole.
  const back = await WsClient.connect(h.wsUrl)
  back.send({ type: 'subscribe', channel: 'doc:board', delta: true, since: { offset: frames[0].offset, epoch: frames[0].epoch }, id: 'r' })
  const replayed = await back.events('doc:board', 5)
  assert.ok(replayed.every((f) => f.delta === undefined))
  assert.deepEqual(replayed.map((f) => f.data), [2, 3, 4, 5, 6].map(documentAt))
  await publish(h.url, 'doc:board', documentAt(7))
  const [afterReplay] = (await back.events('doc:board', 6)).slice(5)
  assert.equal(afterReplay.delta, true, 'live events after the replay are patches again')
  const polled = await poll(h.url, ['doc:board'], { cursor: undefined, timeout: 0 })
  assert.ok((polled.body.events as Frame[]).every((f) => f.delta === undefined))
  for (const x of [ws, plain, back]) x.close()
  sse.close()
  await sseDelta.body?.cancel().catch(() => {})
})

test('delta delivery: no patch where a whole event is as small, not an object, or touches prototype keys; never asked, never sent', async (t) => {
  const h = await startHerald(t, { config: { namespaces: NAMESPACES } })
  const ws = await WsClient.connect(h.wsUrl)
  ws.send({ type: 'subscribe', channel: 'doc:odd', delta: true, id: 'a' })
  ws.send({ type: 'subscribe', channel: 'plain:x', delta: true, id: 'b' })
  await ws.waitFor((f) => f.type === 'ack' && f.id === 'a')
  assert.equal((await ws.waitFor((f) => f.type === 'subscribed' && f.channel === 'plain:x')).delta, undefined, 'the namespace does not allow it')
  const sequence: unknown[] = [
    { a: 1 }, { a: 2 }, // small: the patch is not smaller
    5, 6, 'text', // not objects
    { big: 'x'.repeat(500), n: 1 }, { big: 'x'.repeat(500), n: 2 }, // a patch
    JSON.parse('{"big":"' + 'y'.repeat(500) + '","__proto__":{"polluted":1}}'), // prototype key: whole
    JSON.parse('{"big":"' + 'y'.repeat(500) + '","__proto__":{"polluted":2}}'),
    [1, 2, 3, 'z'.repeat(300)], [1, 2, 4, 'z'.repeat(300)], // arrays: a patch
    nested(3000, 'a'), nested(3000, 'b') // deep: whatever the diff does with it, the node lives and the client gets it right
  ]
  const seen: HeraldEvent[] = []
  const c = createClient({ url: h.url, token: token(), WebSocket: WS as unknown as WebSocketConstructor, transports: ['websocket'] })
  t.after(() => c.close())
  const sub = c.subscribe('doc:odd', { delta: true })
  sub.on('event', (e) => seen.push(e))
  await until(() => sub.state === 'subscribed', 'client subscribed')
  // Straight to the bus: the REST and WebSocket parsers refuse `__proto__` keys before they get anywhere, and the
  // patch guard must hold for whatever reaches the bus.
  for (const data of sequence) await h.app.herald.broker.publish({ channel: 'doc:odd', data })
  await publish(h.url, 'plain:x', { big: 'q'.repeat(500), n: 1 })
  await publish(h.url, 'plain:x', { big: 'q'.repeat(500), n: 2 })
  const frames = await ws.events('doc:odd', sequence.length)
  assert.deepEqual(frames.slice(0, 11).map((f) => f.delta === true), [false, false, false, false, false, false, true, false, false, false, true])
  assert.ok((await ws.events('plain:x', 2)).every((f) => f.delta === undefined))
  await until(() => seen.length === sequence.length, 'the client has every event')
  // As JSON text: assert.deepEqual itself recurses too deep for the nested pair.
  assert.equal(JSON.stringify(seen.map((e) => e.data)), JSON.stringify(sequence))
  assert.equal(({} as Record<string, unknown>).polluted, undefined)
  ws.close()
})

test('delta delivery needs backpressure "disconnect": a namespace that could drop an event in the chain is refused at start', () => {
  for (const backpressure of ['drop-oldest', 'coalesce'] as const) {
    assert.throws(() => new Namespaces({ namespaces: { live: { delta: true, backpressure, coalesceKey: 'id' } } }, { historySize: 10, historyTtl: 60 }), /delta needs backpressure "disconnect"/)
  }
  assert.throws(() => new Namespaces({ defaults: { delta: true, backpressure: 'drop-oldest' } }, { historySize: 10, historyTtl: 60 }), /delta needs/)
  assert.doesNotThrow(() => new Namespaces({ namespaces: { live: { delta: true } } }, { historySize: 10, historyTtl: 60 }))
})

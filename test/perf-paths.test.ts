import { test } from 'node:test'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import assert from 'node:assert/strict'
import { Socket } from 'node:net'
import type { Publication } from '../src/bus/broker.js'
import { MemoryBroker } from '../src/bus/broker-memory.js'
import { StreamCursor, decodeCursor, encodeCursor, type Cursor } from '../src/protocol/cursor.js'
import { WsTransport } from '../src/transports/ws.js'
import { ROOT, SseClient, WsClient, poll, publish, startHerald, token } from './helper.js'

/**
 * The fast paths of issue 15, each checked for what it must keep: the stream cursor encoded incrementally says
 * what a full encoding says; an SSE stream's events of one turn go out in one write, each with its own id; the
 * in-process bus delivers off the publisher's stack, in order; WS_WRITE_DELAY_MS holds a socket's events and
 * writes them together; one-channel SSE streams share one message per event; long-polls that time out at one position share one answer, which resumes from there.
 */

test('stream cursor: encoded move by move, it equals the full encoding and decodes to the same positions', () => {
  const cursor = new StreamCursor()
  const expected: Cursor = new Map()
  const channels = ['a:1', 'b:2', 'c:3']
  const step = (channel: string, offset: number, epoch: string, how: 'set' | 'advance'): void => {
    if (how === 'set') cursor.set(channel, { offset, epoch })
    else cursor.advance(channel, offset, epoch)
    expected.set(channel, { offset, epoch })
    assert.equal(cursor.encode(), encodeCursor(expected))
    assert.deepEqual(decodeCursor(cursor.encode(), channels), expected)
    assert.deepEqual(cursor.get(channel), { offset, epoch })
  }
  step('a:1', 0, 'e1aaaaaa', 'set')
  step('a:1', 1, 'e1aaaaaa', 'advance')
  step('b:2', 41, 'e2bbbbbb', 'set')
  step('a:1', 2, 'e1aaaaaa', 'advance')
  step('c:3', 7, 'e3cccccc', 'advance') // a channel first seen by an event
  step('b:2', 1, 'e9zzzzzz', 'advance') // another epoch
  step('a:1', 123456789, 'e1aaaaaa', 'advance')
  step('b:2', 5, 'e2bbbbbb', 'set')
  // Encoded once per move: asking again gives the same string.
  assert.equal(cursor.encode(), cursor.encode())
})

test('in-process bus: publish resolves before delivery; the publications of one turn are delivered together after it, in order', async () => {
  const broker = new MemoryBroker({ history: { size: 100, ttlSeconds: 60, metaTtlSeconds: 60 }, idempotencyTtlSeconds: 60 })
  const seen: Publication[] = []
  let resolvedBeforeDelivery = false
  let delivered: () => void = () => {}
  const all = new Promise<void>((resolve) => { delivered = resolve })
  broker.setHandler({ onPublication: (pub) => { seen.push(pub); if (seen.length === 4) delivered() }, onReconnect: () => {} })
  await broker.connect()
  await broker.subscribe('q:1')
  await broker.subscribe('q:2')
  const results = ['q:1', 'q:2', 'q:1', 'q:2'].map(async (channel, i) => await broker.publish({ channel, data: { i } }))
  const first = await results[0]
  resolvedBeforeDelivery = seen.length === 0
  // Stored (history, offsets) when publish resolves, even though nobody has been told yet.
  const history = await broker.history('q:1', { since: 0, limit: 10 })
  assert.equal(history.publications.length, 2)
  assert.equal(first.offset, 1)
  await all
  assert.ok(resolvedBeforeDelivery, 'the publisher is answered before the fan-out runs')
  assert.deepEqual(seen.map((p) => [p.channel, p.offset]), [['q:1', 1], ['q:2', 1], ['q:1', 2], ['q:2', 2]])
  // An idempotent retry is still a duplicate, and is not delivered again.
  const again = await broker.publish({ channel: 'q:1', data: { i: 9 }, idempotencyKey: 'k' })
  const retry = await broker.publish({ channel: 'q:1', data: { i: 9 }, idempotencyKey: 'k' })
  assert.equal(retry.duplicate, true)
  assert.equal(retry.offset, again.offset)
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(seen.filter((p) => p.channel === 'q:1').map((p) => p.offset), [1, 2, 3])
  await broker.close()
})

test('in-process bus: the bytes transports encode for delivery and replay never stay on history entries (HISTORY_MAX_BYTES counts frames)', async (t) => {
  const { app, url, wsUrl } = await startHerald(t)
  const live = await WsClient.connect(wsUrl)
  const sse = await SseClient.open(url, ['mem:1'], { token: token() })
  t.after(() => { live.close(); sse.close() })
  await live.subscribe('mem:1')
  await sse.waitFor((m) => m.data.type === 'subscribed')
  for (const i of [1, 2, 3]) assert.equal((await publish(url, 'mem:1', { i })).status, 201)
  await live.events('mem:1', 3)
  await sse.waitFor(() => sse.events().length >= 3)
  // A replay of all three, on WebSocket and SSE, encodes them again.
  const replayer = await WsClient.connect(wsUrl)
  t.after(() => { replayer.close() })
  const sub = await replayer.subscribe('mem:1', { offset: 0, epoch: (await live.events('mem:1', 3))[0].epoch as string })
  assert.equal(sub.recovered, true)
  await replayer.events('mem:1', 3)
  const resumed = await SseClient.open(url, ['mem:1'], { token: token(), lastEventId: sse.messages.find((m) => m.data.type === 'subscribed')!.id })
  t.after(() => { resumed.close() })
  await resumed.waitFor(() => resumed.events().length >= 3)
  const stream = (app.herald.broker as unknown as { streams: Map<string, { entries: object[] }> }).streams.get('mem:1')!
  assert.equal(stream.entries.length, 3)
  for (const entry of stream.entries) assert.deepEqual(Object.keys(entry).sort(), ['channel', 'epoch', 'frame', 'offset', 'ts'])
})

test('SSE: the events a stream gets in one turn go out in one write, each with the id of its own position', async (t) => {
  const { app, url } = await startHerald(t)
  const client = await SseClient.open(url, ['sse:1', 'sse:2'], { token: token() })
  t.after(() => { client.close() })
  await client.waitFor((m) => m.data.type === 'subscribed' && m.data.channel === 'sse:2')
  let writes = 0
  const original = Socket.prototype.write
  Socket.prototype.write = function (this: Socket, ...args: unknown[]) {
    // The server's end of the stream: its chunks carry `data: `.
    const chunk = args[0]
    if ((Buffer.isBuffer(chunk) || typeof chunk === 'string') && chunk.toString().includes('"type":"event"')) writes++
    return (original as (...a: unknown[]) => boolean).apply(this, args)
  } as typeof original
  t.after(() => { Socket.prototype.write = original })
  const broker = app.herald.broker
  // One turn: six publications on two channels, dispatched together after it.
  await Promise.all([1, 2, 3, 4, 5, 6].map(async (i) => await broker.publish({ channel: i % 2 === 0 ? 'sse:2' : 'sse:1', data: { i } })))
  await client.waitFor(() => client.events().length >= 6)
  assert.equal(writes, 1, 'six events, one write')
  const events = client.messages.filter((m) => m.data.type === 'event')
  assert.deepEqual(events.map((m) => (m.data.data as { i: number }).i), [1, 2, 3, 4, 5, 6])
  // Each id holds both channels' positions as they were right after that event.
  const at = { 'sse:1': 0, 'sse:2': 0 }
  for (const m of events) {
    at[m.data.channel as 'sse:1' | 'sse:2'] = m.data.offset as number
    const decoded = decodeCursor(m.id!, ['sse:1', 'sse:2'])
    assert.deepEqual([decoded.get('sse:1')?.offset, decoded.get('sse:2')?.offset], [at['sse:1'], at['sse:2']])
  }
  // Resuming from the id of the fourth event gets exactly the last two.
  const resumed = await SseClient.open(url, ['sse:1', 'sse:2'], { token: token(), lastEventId: events[3].id })
  t.after(() => { resumed.close() })
  await resumed.waitFor(() => resumed.events().length >= 2)
  await resumed.waitFor((m) => m.data.type === 'subscribed' && m.data.channel === 'sse:2')
  assert.deepEqual(resumed.events().map((f) => (f.data as { i: number }).i).sort(), [5, 6])
})

test('SSE, one channel per stream: every stream writes the event\'s one shared message; ids resume exactly, beside a two-channel stream', async (t) => {
  const { app, url } = await startHerald(t)
  const a = await SseClient.open(url, ['one:1'], { token: token() })
  const b = await SseClient.open(url, ['one:1'], { token: token() })
  const both = await SseClient.open(url, ['one:1', 'one:2'], { token: token() })
  t.after(() => { a.close(); b.close(); both.close() })
  for (const c of [a, b]) await c.waitFor((m) => m.data.type === 'subscribed')
  await both.waitFor((m) => m.data.type === 'subscribed' && m.data.channel === 'one:2')
  const broker = app.herald.broker
  // One turn of three (one message each, one write per stream), then one more on its own turn, then one on the other channel.
  await Promise.all([1, 2, 3].map(async (i) => await broker.publish({ channel: 'one:1', data: { i } })))
  for (const c of [a, b, both]) await c.waitFor(() => c.events().length >= 3)
  await broker.publish({ channel: 'one:1', data: { i: 4 } })
  await broker.publish({ channel: 'one:2', data: { i: 5 } })
  for (const c of [a, b]) await c.waitFor(() => c.events().length >= 4)
  await both.waitFor(() => both.events().length >= 5)
  const ids = (c: SseClient): string[] => c.messages.filter((m) => m.data.type === 'event').map((m) => m.id!)
  assert.deepEqual(ids(a), ids(b), 'one-channel streams carry the same ids')
  assert.deepEqual(ids(a).map((id) => decodeCursor(id, ['one:1']).get('one:1')?.offset), [1, 2, 3, 4])
  assert.deepEqual(a.events().map((f) => (f.data as { i: number }).i), [1, 2, 3, 4])
  // The two-channel stream's ids hold both positions, and stay its own.
  assert.deepEqual(ids(both).map((id) => { const c = decodeCursor(id, ['one:1', 'one:2']); return [c.get('one:1')?.offset, c.get('one:2')?.offset] }), [[1, 0], [2, 0], [3, 0], [4, 0], [4, 1]])
  // Resuming from the second event's id gets exactly the next two.
  const resumed = await SseClient.open(url, ['one:1'], { token: token(), lastEventId: ids(a)[1] })
  t.after(() => { resumed.close() })
  await resumed.waitFor(() => resumed.events().length >= 2)
  assert.deepEqual(resumed.events().map((f) => (f.data as { i: number }).i), [3, 4])
  assert.deepEqual(resumed.messages.filter((m) => m.data.type === 'event').map((m) => m.id), ids(a).slice(2))
})

test('long-poll: polls that time out with nothing at the same position all get that position\'s one answer, and resume from it', async (t) => {
  const { url } = await startHerald(t)
  for (const i of [1, 2]) assert.equal((await publish(url, 'lp:1', { i })).status, 201)
  const first = await poll(url, ['lp:1'], { timeout: 0 })
  assert.equal(first.status, 200)
  const cursor = first.body.cursor as string
  // Three polls from that cursor, concurrently (one session), then one after them (the session continued): nothing
  // new arrives, so each times out with no events and the same cursor.
  const timedOut = [...await Promise.all([1, 2, 3].map(async () => await poll(url, ['lp:1'], { cursor, timeout: 1 }))), await poll(url, ['lp:1'], { cursor, timeout: 1 })]
  for (const answer of timedOut) assert.deepEqual([answer.status, answer.body], [200, { events: [], cursor: timedOut[0].body.cursor }])
  assert.deepEqual([...decodeCursor(timedOut[0].body.cursor as string, ['lp:1']).values()].map((p) => p.offset), [2])
  // From that answer's cursor, the next poll gets exactly the next event.
  assert.equal((await publish(url, 'lp:1', { i: 3 })).status, 201)
  const next = await poll(url, ['lp:1'], { cursor: timedOut[3].body.cursor as string, timeout: 5 })
  assert.deepEqual(next.body.events.map((e: { offset: number, data: unknown }) => [e.offset, e.data]), [[3, { i: 3 }]])
})

/** The parts of ws's WebSocket the transport uses, writing into `writes`. */
function fakeSocket (writes: Buffer[]): ConstructorParameters<typeof WsTransport>[0] {
  const raw = { writable: true, write: (b: Buffer) => { writes.push(b); return true } }
  return { extensions: '', readyState: 1, bufferedAmount: 0, _socket: raw, _sender: { _state: 0 }, send: () => {}, close: () => {}, on: () => {} } as unknown as ConstructorParameters<typeof WsTransport>[0]
}

function pub (offset: number): Publication {
  return { channel: 'wd:1', offset, epoch: 'e', ts: 0, frame: JSON.stringify({ type: 'event', channel: 'wd:1', offset, data: {} }) }
}

test('WS_WRITE_DELAY_MS: a socket\'s events wait up to the delay and go out in one write; other frames never overtake them', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  const writes: Buffer[] = []
  const delivered = { websocket: 0, sse: 0, 'long-poll': 0 }
  const ws = new WsTransport(fakeSocket(writes), delivered, 20)
  ws.event(pub(1))
  t.mock.timers.tick(10)
  ws.event(pub(2))
  assert.equal(writes.length, 0, 'held')
  assert.equal(ws.buffered() > 0, true, 'held bytes count against the bound')
  t.mock.timers.tick(10)
  assert.equal(writes.length, 1, 'both in one write, 20 ms after the first')
  assert.deepEqual(writes[0].toString().match(/"offset":\d+/g), ['"offset":1', '"offset":2'])
  // A frame sent while events wait goes out after them.
  let sent = 0
  ;(ws as unknown as { socket: { send: () => void } }).socket.send = () => { sent = writes.length }
  ws.event(pub(3))
  ws.send('{"type":"pong"}')
  assert.equal(sent, 2, 'the held event was written before the pong')
  t.mock.timers.tick(20) // the timer finds nothing left to write
  assert.equal(writes.length, 2)
  assert.equal(delivered.websocket, 3)
  // The default (0) writes at the end of the turn, as before.
  assert.equal(WsTransport.defaultWriteDelayMs, 0)
})

test('bench/delivery-chain.ts: through the real hub, sessions and WebSocket transports, each session gets one write per round; two checkouts take turns', async () => {
  const run = (args: string[]): { status: number | null, stdout: string, stderr: string } => {
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
    const res = spawnSync(process.execPath, ['--import', tsx, join(ROOT, 'bench', 'delivery-chain.ts'), ...args], { cwd: ROOT, encoding: 'utf8' })
    return { status: res.status, stdout: res.stdout, stderr: res.stderr }
  }
  // The same checkout twice: two hubs with their own sessions in one process, measured in turns.
  const ok = run(['--root', '.,.', '--sessions', '300', '--channels', '30', '--rounds', '4', '--repeat', '3'])
  assert.equal(ok.status, 0, ok.stderr)
  const out = JSON.parse(ok.stdout) as { deliveriesPerRepeat: number, roots: Array<{ usPerDelivery: number[], minUsPerDelivery: number, medianUsPerDelivery: number }>, medianRatioToFirst: number[] }
  // The script itself fails unless every session got exactly one write per round (one event each, one write per turn).
  assert.equal(out.deliveriesPerRepeat, 1200)
  assert.equal(out.roots.length, 2)
  for (const root of out.roots) {
    assert.equal(root.usPerDelivery.length, 3)
    assert.ok(root.usPerDelivery.every((x) => x > 0), JSON.stringify(root))
    assert.ok(root.minUsPerDelivery <= root.medianUsPerDelivery)
  }
  assert.equal(out.medianRatioToFirst[0], 1)
  assert.ok(out.medianRatioToFirst[1] > 0)
  const bad = run(['--channels', '0'])
  assert.notEqual(bad.status, 0)
  assert.match(bad.stderr, /--channels needs a positive integer/)
})

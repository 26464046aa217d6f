import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  Backoff, OfflineQueue, ConnectionStateMachine, canTransition, Reconnector, Heartbeat, closeAction, CloseCodes,
  encodeCursor, decodeCursor, tokenExpiry, SseParser, Subscription, createClient, HeraldError,
  type Clock, type TimerHandle, type ConnectionState, type StateChange, type HeraldEvent, type RecoveryFailed,
  type WebSocketLike, type RetryInfo
} from '../client/index.js'
import type { EventFrame } from '../client/frames.js'
import { encodeCursor as serverEncodeCursor, decodeCursor as serverDecodeCursor } from '../src/protocol/cursor.js'
import { token } from './helper.js'

// ------------------------------------------------------------------ a fake clock

/** Timers run only when the test advances time; random() is scripted. */
class FakeClock implements Clock {
  time = 1_000_000
  private timers: Array<{ id: number, at: number, fn: () => void }> = []
  private ids = 0
  randomValues: number[] = []
  defaultRandom = 0.5

  now (): number { return this.time }
  setTimeout (fn: () => void, ms: number): TimerHandle {
    const id = ++this.ids
    this.timers.push({ id, at: this.time + Math.max(0, ms), fn })
    return id
  }

  clearTimeout (handle: TimerHandle): void { this.timers = this.timers.filter((t) => t.id !== handle) }
  random (): number { return this.randomValues.length > 0 ? this.randomValues.shift()! : this.defaultRandom }
  get pending (): number { return this.timers.length }

  /** Runs, in time order, every timer due within `ms`, letting promise chains settle after each. */
  async advance (ms: number): Promise<void> {
    const target = this.time + ms
    await settle()
    for (;;) {
      const due = this.timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.id - b.id)[0]
      if (due === undefined) break
      this.timers = this.timers.filter((t) => t !== due)
      this.time = due.at
      due.fn()
      await settle()
    }
    this.time = target
  }
}

async function settle (): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

// ------------------------------------------------------------------ backoff

test('backoff: full jitter within [0, ceiling), exponential growth, cap at max, reset', () => {
  const samples: number[] = []
  const b = new Backoff({ min: 100, max: 1000, factor: 2 }, () => 0.999999)
  for (let i = 0; i < 7; i++) samples.push(b.next())
  // The ceilings are 100, 200, 400, 800, then capped at 1000; random() close to 1 lands just under each.
  assert.deepEqual(samples, [99, 199, 399, 799, 999, 999, 999])
  assert.equal(b.attempts, 7)
  b.reset()
  assert.equal(b.attempts, 0)
  assert.equal(b.ceiling(), 100)

  const zero = new Backoff({ min: 100, max: 1000 }, () => 0)
  assert.deepEqual([zero.next(), zero.next(), zero.next()], [0, 0, 0], 'full jitter reaches down to 0')

  // Real randomness: every delay within bounds, and spread over the window (not clustered at the top).
  const real = new Backoff({ min: 50, max: 5000, factor: 3 })
  for (let attempt = 0; attempt < 10; attempt++) {
    const ceiling = real.ceiling()
    assert.equal(ceiling, Math.min(5000, 50 * 3 ** attempt))
    const delay = real.next()
    assert.ok(delay >= 0 && delay < ceiling, `attempt ${attempt}: ${delay} in [0, ${ceiling})`)
  }
  const spread = Array.from({ length: 2000 }, () => { const x = new Backoff({ min: 1000, max: 1000 }); return x.next() })
  const mean = spread.reduce((a, b) => a + b, 0) / spread.length
  assert.ok(mean > 400 && mean < 600, `uniform over [0, 1000): mean ${mean}`)
  assert.ok(Math.min(...spread) < 100 && Math.max(...spread) > 900)

  assert.deepEqual([new Backoff().min, new Backoff().max, new Backoff().factor], [500, 30_000, 2], 'defaults')
  assert.throws(() => new Backoff({ min: 0 }), RangeError)
  assert.throws(() => new Backoff({ min: 100, max: 50 }), RangeError)
  assert.throws(() => new Backoff({ factor: 0.5 }), RangeError)
})

// ------------------------------------------------------------------ offline queue

test('offline queue: bounded; reject-newest keeps the first, reject-oldest keeps the last; FIFO order; requeued items keep their place', () => {
  const newest = new OfflineQueue<number>({ max: 3, overflow: 'reject-newest' })
  assert.deepEqual([1, 2, 3].map((n) => newest.push(n)), [undefined, undefined, undefined])
  assert.equal(newest.push(4), 4, 'the new item is rejected')
  assert.deepEqual(newest.toArray(), [1, 2, 3])

  const oldest = new OfflineQueue<number>({ max: 3, overflow: 'reject-oldest' })
  for (const n of [1, 2, 3]) oldest.push(n)
  assert.equal(oldest.push(4), 1, 'the oldest item is rejected')
  assert.equal(oldest.push(5), 2)
  assert.deepEqual(oldest.toArray(), [3, 4, 5])
  assert.deepEqual([oldest.shift(), oldest.shift(), oldest.shift(), oldest.shift()], [3, 4, 5, undefined], 'first in, first out')

  // Items sent once (their ack lost) go back in front, are not counted against the bound and are never evicted.
  const q = new OfflineQueue<string>({ max: 2, overflow: 'reject-oldest' })
  q.push('c'); q.push('d')
  q.requeue(['a', 'b'])
  assert.equal(q.size, 4)
  assert.equal(q.unsent, 2)
  assert.equal(q.push('e'), 'c', 'evicts the oldest never-sent item, not a requeued one')
  assert.deepEqual(q.toArray(), ['a', 'b', 'd', 'e'])
  assert.equal(q.shift(), 'a')
  assert.equal(q.unsent, 2)
  assert.deepEqual(q.drain(), ['b', 'd', 'e'])
  assert.equal(q.size, 0)

  const none = new OfflineQueue<number>({ max: 0 })
  assert.equal(none.push(1), 1, 'max 0 holds nothing')
  assert.deepEqual([new OfflineQueue().max, new OfflineQueue().overflow], [1000, 'reject-oldest'], 'defaults')
  assert.throws(() => new OfflineQueue({ max: -1 }), RangeError)
  assert.throws(() => new OfflineQueue({ overflow: 'drop' as never }), RangeError)
})

// ------------------------------------------------------------------ state machine

test('state machine: the legal transitions, one event each with its reason; closed is final', () => {
  const m = new ConnectionStateMachine()
  const changes: StateChange[] = []
  m.on('change', (c) => changes.push(c))
  assert.equal(m.state, 'disconnected')
  m.transition('connecting', 'connect')
  m.transition('connected', 'open')
  m.transition('reconnecting', 'closed 4001')
  m.transition('connected', 'open')
  m.transition('closed', 'client')
  assert.deepEqual(changes, [
    { from: 'disconnected', to: 'connecting', reason: 'connect' },
    { from: 'connecting', to: 'connected', reason: 'open' },
    { from: 'connected', to: 'reconnecting', reason: 'closed 4001' },
    { from: 'reconnecting', to: 'connected', reason: 'open' },
    { from: 'connected', to: 'closed', reason: 'client' }
  ])
  assert.throws(() => m.transition('connecting', 'again'), /illegal/)
  const all: ConnectionState[] = ['disconnected', 'connecting', 'connected', 'reconnecting', 'closed']
  const legal = all.flatMap((from) => all.filter((to) => canTransition(from, to)).map((to) => `${from}>${to}`))
  assert.deepEqual(legal.sort(), [
    'connected>closed', 'connected>reconnecting', 'connecting>closed', 'connecting>connected', 'connecting>reconnecting',
    'disconnected>closed', 'disconnected>connecting', 'reconnecting>closed', 'reconnecting>connected'
  ])
})

test('reconnector (fake clock): backoff between failed attempts, reset after a stable connection, jitter for 1012, nothing after close', async () => {
  const clock = new FakeClock()
  const backoff = new Backoff({ min: 100, max: 1000, factor: 2 }, () => clock.random())
  let attempts = 0
  const changes: string[] = []
  const retries: RetryInfo[] = []
  const r = new Reconnector({ clock, backoff, stableAfter: 5000, connect: () => { attempts++ }, onChange: (c) => changes.push(`${c.to}:${c.reason}`), onRetry: (i) => retries.push(i) })
  r.start()
  assert.equal(attempts, 1)
  assert.equal(r.state, 'connecting')

  // Three failures in a row: delays 50, 100, 200 (random 0.5 × ceilings 100, 200, 400), each attempt on time.
  for (const expected of [50, 100, 200]) {
    const before: number = attempts
    assert.equal(r.lost('refused'), expected)
    await clock.advance(expected - 1)
    assert.equal(attempts, before, 'not before the delay')
    await clock.advance(1)
    assert.equal(attempts, before + 1, 'at the delay')
  }
  assert.equal(r.state, 'reconnecting')
  r.connected()
  assert.equal(r.state, 'connected')
  // Dropped before it was stable: the backoff keeps growing.
  await clock.advance(4999)
  assert.equal(r.lost('closed 1006'), 400)
  await clock.advance(400)
  r.connected()
  await clock.advance(5000) // stable: reset
  assert.equal(backoff.attempts, 0)
  assert.equal(r.lost('closed 1006'), 50, 'back to the first delay')
  await clock.advance(50)
  r.connected()

  // 1012: at once, jittered within [0, min), and the backoff does not grow.
  clock.randomValues = [0.25]
  const attemptsBefore = backoff.attempts
  assert.equal(r.lost('closed 1012', 'jitter'), 25)
  assert.equal(backoff.attempts, attemptsBefore)
  await clock.advance(25)
  r.connected()
  assert.equal(r.lost('token expired', 'now'), 0)

  // close(): final, the pending attempt never runs.
  const beforeClose: number = attempts
  assert.equal(r.close('client'), true)
  await clock.advance(60_000)
  assert.equal(attempts, beforeClose)
  assert.equal(r.state, 'closed')
  assert.equal(r.close('again'), false)
  assert.equal(r.lost('late'), undefined)
  assert.equal(clock.pending, 0, 'no timer left behind')
  assert.deepEqual(changes.slice(0, 4), ['connecting:connect', 'reconnecting:refused', 'connected:open', 'reconnecting:closed 1006'])
  assert.equal(changes.at(-1), 'closed:client')
  assert.deepEqual(retries.slice(0, 3).map((i) => [i.attempt, i.delay]), [[1, 50], [2, 100], [3, 200]])
})

test('close codes: 1012 reconnect at once, 4000–4499 reconnect, 4501 new token, other 45xx terminal (the server\'s own table)', () => {
  assert.equal(closeAction(CloseCodes.SERVICE_RESTART), 'reconnect-now')
  for (const code of [1000, 1006, 1009, 4001, 4002, 4003, 4008, 4499]) assert.equal(closeAction(code), 'reconnect', String(code))
  assert.equal(closeAction(CloseCodes.TOKEN_EXPIRED), 'refresh-token')
  for (const code of [4500, 4502, 4503, 4999]) assert.equal(closeAction(code), 'terminal', String(code))
})

test('heartbeat (fake clock): pings every interval, dead after timeout of silence, activity keeps it alive', async () => {
  const clock = new FakeClock()
  let pings = 0
  let dead = 0
  const hb = new Heartbeat(clock, { interval: 1000, timeout: 2500, ping: () => { pings++ }, dead: () => { dead++ } })
  hb.start()
  await clock.advance(1000)
  assert.equal(pings, 1)
  hb.activity()
  await clock.advance(1000)
  assert.equal(pings, 2)
  await clock.advance(1000)
  assert.equal(pings, 3)
  assert.equal(dead, 0, '2000 ms since the last activity')
  await clock.advance(500)
  assert.equal(dead, 1, 'dead 2500 ms after the last activity')
  await clock.advance(10_000)
  assert.equal(dead, 1, 'once')
  assert.equal(pings, 3)

  let dead2 = 0
  const hb2 = new Heartbeat(clock, { interval: 1000, timeout: 2500, dead: () => { dead2++ } })
  hb2.start()
  for (let i = 0; i < 10; i++) { await clock.advance(1000); hb2.activity() }
  assert.equal(dead2, 0, 'alive while messages keep arriving')
  hb2.stop()
  await clock.advance(10_000)
  assert.equal(dead2, 0, 'stopped')
})

// ------------------------------------------------------------------ exactly once

function eventFrame (offset: number, epoch = 'e1', channel = 'c'): EventFrame {
  return { type: 'event', channel, offset, epoch, ts: 1, data: { offset } }
}

test('subscription: events at or before the last position of the same epoch are dropped; a new epoch is announced by recovery-failed', () => {
  const sub = new Subscription('c', undefined)
  const got: HeraldEvent[] = []
  const failures: RecoveryFailed[] = []
  sub.on('event', (e) => got.push(e))
  sub.on('recovery-failed', (f) => failures.push(f))
  sub.handleSubscribed({ offset: 0, epoch: 'e1', replayed: 0 })
  for (const offset of [1, 2, 2, 1, 3]) sub.handleEvent(eventFrame(offset))
  assert.deepEqual(got.map((e) => e.offset), [1, 2, 3])
  assert.deepEqual(sub.position, { offset: 3, epoch: 'e1' })
  // A resume that overlaps what was seen (replay from an older cursor) is deduplicated.
  sub.handleDisconnect()
  assert.equal(sub.state, 'pending')
  sub.handleSubscribed({ offset: 3, epoch: 'e1', recovered: true, replayed: 2 })
  for (const offset of [3, 4, 5]) sub.handleEvent(eventFrame(offset))
  assert.deepEqual(got.map((e) => e.offset), [1, 2, 3, 4, 5])
  // The stream was reset: the server says so, and offsets start again in the new epoch.
  sub.handleSubscribed({ offset: 2, epoch: 'e2', recovered: false, reason: 'epoch_changed', replayed: 0 })
  assert.deepEqual(failures, [{ channel: 'c', reason: 'epoch_changed', previous: { offset: 5, epoch: 'e1' }, offset: 2, epoch: 'e2' }])
  for (const offset of [2, 3]) sub.handleEvent(eventFrame(offset, 'e2'))
  assert.deepEqual(got.slice(5).map((e) => [e.offset, e.epoch]), [[3, 'e2']])
  sub.unsubscribe()
  sub.handleEvent(eventFrame(4, 'e2'))
  assert.equal(got.length, 6, 'nothing after unsubscribe')
  assert.equal(sub.state, 'unsubscribed')
})

test('subscription: since is the first resume position', () => {
  const sub = new Subscription('c', undefined, { offset: 7, epoch: 'e' })
  assert.deepEqual(sub.position, { offset: 7, epoch: 'e' })
  const got: number[] = []
  sub.on('event', (e) => got.push(e.offset))
  for (const offset of [6, 7, 8]) sub.handleEvent(eventFrame(offset, 'e'))
  assert.deepEqual(got, [8])
})

// ------------------------------------------------------------------ wire formats

test('cursors: the client\'s encoding is the server\'s, both ways', () => {
  const positions = new Map([['chat:lobby', { offset: 42, epoch: 'q7Xk2mJ0' }], ['a.b@c-d_e', { offset: 0, epoch: 'Zz-_09' }], ['x', { offset: 1, epoch: '0' }]])
  const channels = [...positions.keys()]
  const clientCursor = encodeCursor(positions)
  assert.equal(clientCursor, serverEncodeCursor(positions))
  assert.deepEqual(serverDecodeCursor(clientCursor, channels), positions)
  assert.deepEqual(decodeCursor(serverEncodeCursor(positions), channels), positions)
  assert.equal(decodeCursor('x1.abc'), undefined)
  assert.equal(decodeCursor('c1.!!!'), undefined)
})

test('SSE parser: messages split at any byte, CRLF/CR/LF line ends, comments, multi-line data, ids', () => {
  // (A CR at the very end could be half of a CRLF: the last message is complete once the next byte arrives.)
  const stream = 'retry: 1000\r\ndata: {"type":"connected"}\r\n\r\n: hb\n\nid: c1.abc\ndata: {"a":\ndata: 1}\n\nid: c1.def\rdata: x\r\r: hb\n'
  for (let size = 1; size <= stream.length; size++) {
    const p = new SseParser()
    const out = []
    for (let i = 0; i < stream.length; i += size) out.push(...p.push(stream.slice(i, i + size)))
    assert.deepEqual(out, [
      { data: '{"type":"connected"}', id: undefined, event: undefined },
      { data: '{"a":\n1}', id: 'c1.abc', event: undefined },
      { data: 'x', id: 'c1.def', event: undefined }
    ], `chunks of ${size}`)
  }
})

test('token expiry is read from the JWT payload', () => {
  const before = Date.now()
  const signed = token({}, { expiresInMs: 60_000 })
  const after = Date.now()
  const exp = tokenExpiry(signed)!
  // exp is in whole seconds: signed between before and after, 60 s later, floored to the second.
  assert.ok(exp >= Math.floor(before / 1000) * 1000 + 60_000 - 1000 && exp <= after + 60_000, String(exp))
  assert.equal(tokenExpiry('not-a-jwt'), undefined)
  assert.equal(tokenExpiry('a.' + Buffer.from('{"sub":"x"}').toString('base64url') + '.c'), undefined, 'no exp')
})

// ------------------------------------------------------------------ the client's state machine, network down

/** A WebSocket whose connection always fails, like one to a host that refuses it. */
class RefusedWebSocket implements WebSocketLike {
  static created = 0
  readyState = 0
  onopen: ((e: any) => void) | null = null
  onmessage: ((e: any) => void) | null = null
  onclose: ((e: any) => void) | null = null
  onerror: ((e: any) => void) | null = null
  constructor (readonly url: string) {
    RefusedWebSocket.created++
    queueMicrotask(() => { this.readyState = 3; this.onerror?.({}); this.onclose?.({ code: 1006, reason: '' }) })
  }

  send (): void { throw new Error('not open') }
  close (): void {}
}

test('client (fake clock, network down): connecting, then reconnecting with growing full-jitter delays; close() stops it; publishes wait, then are rejected', async () => {
  const clock = new FakeClock()
  const fetches: string[] = []
  const c = createClient({
    url: 'http://127.0.0.1:9/',
    token: token(),
    clock,
    WebSocket: RefusedWebSocket,
    fetch: async (url) => { fetches.push(url); throw new TypeError('fetch failed: connect ECONNREFUSED') },
    backoff: { min: 100, max: 1000, factor: 2 }
  })
  const changes: StateChange[] = []
  const retries: RetryInfo[] = []
  c.on('state', (s) => changes.push(s))
  c.on('reconnect', (r) => retries.push(r))
  assert.equal(c.state, 'disconnected', 'connects in a microtask, after listeners are attached')
  const pending = c.publish('room', { n: 1 })
  await settle()
  // The WebSocket failed; the HTTP probe failed too: the server is down, so no fallback — back off on WebSocket.
  assert.deepEqual(changes.map((s) => s.to), ['connecting', 'reconnecting'])
  assert.match(changes[1].reason, /websocket: closed 1006; server unreachable/)
  assert.deepEqual(fetches, ['http://127.0.0.1:9/v1/whoami'])
  assert.equal(c.transport, 'websocket')
  for (const delay of [100, 200, 400, 500]) await clock.advance(delay)
  assert.deepEqual(retries.map((r) => r.delay), [50, 100, 200, 400, 500], 'random 0.5 × ceilings 100, 200, 400, 800, 1000')
  assert.equal(RefusedWebSocket.created, 5)
  assert.equal(c.state, 'reconnecting', 'no event for attempts within the same state')
  assert.equal(c.pendingPublishes, 1)

  c.close()
  assert.equal(c.state, 'closed')
  await assert.rejects(pending, (err: HeraldError) => err.code === 'HERALD_CLIENT_CLOSED')
  await clock.advance(60_000)
  assert.equal(RefusedWebSocket.created, 5, 'no attempt after close()')
  assert.deepEqual(changes.map((s) => s.to), ['connecting', 'reconnecting', 'closed'])
  assert.equal(clock.pending, 0, 'no timer left behind')
  assert.throws(() => c.subscribe('room'), HeraldError)
})

test('client: option checks', () => {
  assert.throws(() => createClient({ url: '', token: 'x' }), TypeError)
  assert.throws(() => createClient({ url: 'http://x' }), /token/)
  assert.throws(() => createClient({ url: 'http://x', token: 'x', transports: ['carrier-pigeon' as never] }), /unknown transport/)
  // Node 20 has no global WebSocket: without the option, websocket is skipped (SSE first).
  const c = createClient({ url: 'ws://127.0.0.1:9/prefix/', token: 'x', autoConnect: false, transports: ['websocket', 'sse'] })
  assert.equal(c.url, 'http://127.0.0.1:9/prefix')
  assert.equal(c.state, 'disconnected')
  assert.throws(() => c.subscribe('bad channel'), (err: HeraldError) => err.code === 'HERALD_ERR_BAD_CHANNEL')
  c.close()
  assert.equal(c.state, 'closed')
})

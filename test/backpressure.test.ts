import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { get as httpGet, type IncomingMessage, type ClientRequest } from 'node:http'
import v8 from 'node:v8'
import { runInNewContext } from 'node:vm'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { startHerald, startRedis, redisSkipReason, token, until, SseClient, type Frame } from './helper.js'
import { defaultConfig } from '../src/config.js'

/**
 * Slow consumers. A client whose TCP socket is not read while the stream goes on must cost the node a bounded
 * amount of memory, must not hold back the other subscribers, and must be able to get everything it missed
 * from history afterwards — by the policy of the channel's namespace (docs/namespaces.md):
 * disconnect (WebSocket 4001 / SSE disconnect 4001), drop-oldest, coalesce.
 *
 * The events are published through the node's bus (`app.herald.broker.publish`, as the REST route does after
 * its checks): thousands of REST round trips would only make the tests slow, and what is under test is the
 * delivery side. Herald runs in this process, so its memory is this process's memory.
 */

const DEFAULTS = defaultConfig()
const KiB = 1024
const MiB = 1024 * 1024

/** A collector that can be forced (V8's own flag, set at run time), so heap numbers mean live data, not garbage. */
const forceGc: (() => void) | undefined = (() => {
  try {
    v8.setFlagsFromString('--expose-gc')
    return runInNewContext('gc') as () => void
  } catch {
    return undefined
  }
})()

function liveBytes (): number {
  if (forceGc !== undefined) { forceGc(); forceGc() }
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

/** One received frame; an event keeps its position and a summary of its data (not the padding). */
interface Rec { type: string, channel?: string, offset?: number, epoch?: string, n?: number, key?: string, v?: number, [k: string]: unknown }

/**
 * A `ws` client that keeps what tests need of each frame and drops the bulk, so that thousands of large events
 * do not grow this process (which is also the server's) on the client side.
 */
class LiteWs {
  readonly log: Rec[] = []
  closed: { code: number, reason: string } | null = null
  client = ''
  private constructor (readonly socket: WebSocket) {
    // Listening from the start: the `connected` frame may arrive in the same tick as `open`.
    socket.on('message', (data) => {
      const f = JSON.parse(data.toString()) as Frame
      if (f.type === 'event') {
        const d = (f.data ?? {}) as { n?: number, key?: string, v?: number }
        this.log.push({ type: 'event', channel: f.channel, offset: f.offset, epoch: f.epoch, n: d.n, key: d.key, v: d.v })
      } else {
        if (f.type === 'connected') this.client = f.client
        this.log.push(f)
      }
    })
    socket.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() } })
    socket.on('error', () => {})
  }

  static async connect (t: TestContext, wsUrl: string, sub = 'tester'): Promise<LiteWs> {
    const socket = new WebSocket(`${wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${token({ sub })}` } })
    const c = new LiteWs(socket)
    t.after(() => socket.terminate())
    await new Promise<void>((resolve, reject) => { socket.once('open', () => resolve()); socket.once('error', reject) })
    await until(() => c.client !== '', 'connected frame')
    return c
  }

  events (channel: string): Rec[] { return this.log.filter((r) => r.type === 'event' && r.channel === channel) }
  last (channel: string): Rec | undefined { const e = this.events(channel); return e[e.length - 1] }

  async subscribe (channel: string, since?: { offset: number, epoch: string }): Promise<Rec> {
    const from = this.log.length
    this.socket.send(JSON.stringify({ type: 'subscribe', channel, since }))
    await until(() => this.log.slice(from).some((r) => (r.type === 'subscribed' && r.channel === channel) || r.type === 'error') || this.closed !== null, `subscribed to ${channel}`)
    const reply = this.log.slice(from).find((r) => (r.type === 'subscribed' && r.channel === channel) || r.type === 'error')
    assert.equal(reply?.type, 'subscribed', JSON.stringify(reply))
    return reply!
  }

  /** Stops reading the TCP socket: the kernel buffers fill, then the server's. */
  pause (): void { (this.socket as any)._socket.pause() }
  resume (): void { (this.socket as any)._socket.resume() }
}

/** The server side of a connection, by its client id: only to observe what the node holds for it. */
function serverConnection (app: FastifyInstance, clientId: string): any {
  for (const c of (app.herald.connections as any).all as Set<any>) if (c.id === clientId) return c
  return undefined
}

async function evictions (app: FastifyInstance, transport: string, reason: string): Promise<number> {
  return (await app.herald.metrics.evictions.get()).values.find((v) => v.labels.transport === transport && v.labels.reason === reason)?.value ?? 0
}

/** Publishes through the bus with the namespace's history bounds, `concurrency` at a time, in seq order of start. */
async function blast (app: FastifyInstance, channel: string, count: number, data: (n: number) => unknown, opts: { concurrency?: number, from?: number, after?: (n: number) => void | Promise<void>, stop?: () => boolean } = {}): Promise<number> {
  const ns = app.herald.channelOptions(channel)
  let next = opts.from ?? 1
  const last = (opts.from ?? 1) + count - 1
  let published = 0
  const worker = async (): Promise<void> => {
    while (next <= last && opts.stop?.() !== true) {
      const n = next++
      await app.herald.broker.publish({ channel, data: data(n), historySize: ns.historySize, historyTtlSeconds: ns.historyTtl })
      published++
      await opts.after?.(n)
      // Let I/O run between publishes (the in-process bus answers without any), as a stream of requests would.
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
  await Promise.all(Array.from({ length: opts.concurrency ?? 1 }, worker))
  return published
}

function assertExactly (offsets: number[], from: number, to: number, what: string): void {
  const expected = Array.from({ length: to - from + 1 }, (_, i) => from + i)
  if (offsets.length === expected.length && offsets.every((o, i) => o === expected[i])) return
  const seen = new Set<number>()
  const dups = offsets.filter((o) => seen.has(o) || (seen.add(o), false))
  const missing = expected.filter((o) => !seen.has(o))
  assert.fail(`${what}: expected offsets ${from}..${to} once each, in order; got ${offsets.length} (duplicates ${JSON.stringify(dups.slice(0, 10))}, missing ${missing.length}: ${JSON.stringify(missing.slice(0, 10))}…, first ${JSON.stringify(offsets.slice(0, 5))})`)
}

// ---------------------------------------------------------------- disconnect

test('disconnect policy: a paused WebSocket is evicted with 4001, memory stays bounded, a reader gets everything, the evicted one resumes exactly', { skip: redisSkipReason() }, async (t) => {
  // History lives in Redis here, so the node's memory holds only what it buffers for its clients.
  const redis = await startRedis(t)
  const maxBufferBytes = 64 * KiB
  const N = 3600
  const pad = 'p'.repeat(6000)
  const { app, wsUrl } = await startHerald(t, {
    redisUrl: redis.url,
    config: { maxBufferBytes, history: { ...DEFAULTS.history, size: N + 100 } }
  })
  const ch = 'slow:big'
  const reader = await LiteWs.connect(t, wsUrl, 'reader')
  const slow = await LiteWs.connect(t, wsUrl, 'slow')
  await reader.subscribe(ch)
  await slow.subscribe(ch)
  const slowServer = serverConnection(app, slow.client)
  assert.ok(slowServer !== undefined)
  // Warm the path up (JIT, buffers) before measuring.
  await blast(app, ch, 20, (n) => ({ n, pad }))
  await until(() => reader.events(ch).length === 20 && slow.events(ch).length === 20, 'warm-up delivered to both')

  slow.pause()
  const before = liveBytes()
  let peakBuffered = 0
  let frameBytes = 0
  let evictedAt = 0
  await blast(app, ch, N - 20, (n) => ({ n, pad }), {
    from: 21,
    concurrency: 4,
    after: (n) => {
      if (evictedAt === 0) peakBuffered = Math.max(peakBuffered, slowServer.buffered())
      if (evictedAt === 0 && serverConnection(app, slow.client) === undefined) {
        evictedAt = n
        // Read again now, so the close frame is read before the node gives up on the close handshake.
        slow.resume()
      }
    }
  })
  frameBytes = JSON.stringify({ type: 'event', channel: ch, offset: N, epoch: 'xxxxxxxx', ts: Date.now(), data: { n: N, pad } }).length
  const publishedBytes = (N - 20) * frameBytes
  await until(() => reader.events(ch).length >= N, `the reader receives all ${N} events`, 20_000)
  // Measure at a quiet point, not while bytes are still in flight: the evicted client has read up to its close
  // (so neither side holds socket buffers for it any more) and the reader has everything.
  const closed = await until(() => slow.closed !== null, 'the evicted client sees its close', 10_000).then(() => slow.closed!)
  const after = liveBytes()
  const growth = after - before
  t.diagnostic(`published ${(publishedBytes / MiB).toFixed(1)} MiB while the slow client was paused; evicted at #${evictedAt}; live memory growth ${(growth / MiB).toFixed(2)} MiB (forced GC: ${forceGc !== undefined}); peak buffered for it ${peakBuffered} B`)

  // The reader: every event, in order, once; never disconnected.
  assertExactly(reader.events(ch).map((e) => e.offset!), 1, N, 'the reader')
  assert.equal(reader.closed, null)

  // The slow one was evicted as a slow consumer, with the bound respected until then.
  assert.ok(evictedAt > 0, 'the slow consumer was never evicted')
  assert.equal(closed.code, 4001, `close ${closed.code} ${closed.reason}`)
  assert.equal(await evictions(app, 'websocket', 'disconnect'), 1)
  // What the node held for the paused client, read from the connection itself (its outbox and socket buffer),
  // not from the heap: deterministic, whatever the collector does.
  assert.ok(peakBuffered <= maxBufferBytes + 2 * frameBytes, `the node held ${peakBuffered} B for the paused client (bound ${maxBufferBytes})`)
  // Memory: ≥ 20 MB went out while the client did not read; the node kept well under half of it. Live heap
  // after full collections (forced when V8 allows it; otherwise a wider margin for garbage still counted).
  assert.ok(publishedBytes >= 20 * MiB, `published ${publishedBytes} B`)
  assert.ok(growth < (forceGc !== undefined ? 10 * MiB : 16 * MiB), `live memory grew by ${(growth / MiB).toFixed(1)} MiB while ${(publishedBytes / MiB).toFixed(1)} MiB were published`)

  // What it got before the eviction is a gap-free prefix.
  const got = slow.events(ch).map((e) => e.offset!)
  const L = got.length
  assertExactly(got, 1, L, 'the evicted client before its eviction')
  assert.ok(L < N)
  const lastPos = { offset: slow.last(ch)!.offset!, epoch: slow.last(ch)!.epoch! }

  // It reconnects and resumes from its last position: every missed event, once, in order, then live.
  const again = await LiteWs.connect(t, wsUrl, 'slow')
  const sub = await again.subscribe(ch, lastPos)
  assert.equal(sub.recovered, true, JSON.stringify(sub))
  assert.equal(sub.replayed, N - L)
  await until(() => again.events(ch).length >= N - L || again.closed !== null, 'the resumed client catches up', 20_000)
  assert.equal(again.closed, null,
    `the resumed client, reading as fast as it can, was closed (${again.closed?.code} ${again.closed?.reason}) after ${again.events(ch).length} of the ${N - L} replayed events`)
  await blast(app, ch, 1, (n) => ({ n, pad: 'live' }), { from: N + 1 })
  await until(() => again.events(ch).length >= N - L + 1, 'a live event after the replay')
  assertExactly(again.events(ch).map((e) => e.offset!), L + 1, N + 1, 'the resumed client')
})

// ---------------------------------------------------------------- drop-oldest

test('drop-oldest policy: the slow WebSocket stays open, is told to resubscribe, and resubscribing from its last position fills the gap exactly', async (t) => {
  const maxBufferBytes = 64 * KiB
  const { app, wsUrl } = await startHerald(t, {
    config: { maxBufferBytes, namespaces: { namespaces: { feed: { backpressure: 'drop-oldest' } } }, history: { ...DEFAULTS.history, size: 10_000 } }
  })
  const ch = 'feed:1'
  const reader = await LiteWs.connect(t, wsUrl, 'reader')
  const slow = await LiteWs.connect(t, wsUrl, 'slow')
  await reader.subscribe(ch)
  await slow.subscribe(ch)
  const pad = 'q'.repeat(4000)

  slow.pause()
  let dropped = false
  const first = await blast(app, ch, 8000, (n) => ({ n, pad }), {
    after: async (n) => { if (n % 10 === 0) dropped = await evictions(app, 'websocket', 'dropped') > 0 },
    stop: () => dropped
  })
  assert.ok(dropped, `no drop after ${first} events`)
  // The stream goes on after the drop.
  await blast(app, ch, 40, (n) => ({ n, pad }), { from: first + 1 })
  const M = first + 40
  assert.equal(app.herald.connections.count('websocket'), 2, 'the slow client is still connected')
  assert.equal(await evictions(app, 'websocket', 'disconnect'), 0)

  slow.resume()
  const notice = await until(() => slow.log.some((r) => r.type === 'unsubscribed'), 'the gap notice reaches the client', 5000)
    .then(() => slow.log.find((r) => r.type === 'unsubscribed')!)
  assert.deepEqual(notice, { type: 'unsubscribed', channel: ch, reason: 'insufficient_state: slow_consumer', resubscribe: true })
  const at = slow.log.indexOf(notice)
  const before = slow.log.slice(0, at).filter((r) => r.type === 'event')
  assertExactly(before.map((e) => e.offset!), 1, before.length, 'events before the notice')
  assert.ok(before.length < M)

  // As the protocol says: subscribe again with the last position.
  const last = before[before.length - 1]
  const sub = await slow.subscribe(ch, { offset: last.offset!, epoch: last.epoch! })
  assert.equal(sub.recovered, true)
  assert.equal(sub.replayed, M - last.offset!)
  const subAt = slow.log.indexOf(sub)
  assert.equal(slow.log.slice(at, subAt).filter((r) => r.type === 'event').length, 0, 'nothing of the channel between the notice and the resubscribe')
  await until(() => slow.events(ch).length >= M || slow.log.filter((r) => r.type === 'unsubscribed').length > 1 || slow.closed !== null, 'the slow client catches up', 10_000)
  assert.equal(slow.closed, null)
  assert.equal(slow.log.filter((r) => r.type === 'unsubscribed').length, 1, 'no further drop while it reads')
  assertExactly(slow.events(ch).map((e) => e.offset!), 1, M, 'the slow client, after resubscribing')
  // The reader was never held back or dropped.
  await until(() => reader.events(ch).length >= M, 'the reader receives everything')
  assertExactly(reader.events(ch).map((e) => e.offset!), 1, M, 'the reader')
  assert.equal(reader.log.filter((r) => r.type === 'unsubscribed').length, 0)
})

// ---------------------------------------------------------------- coalesce

test('coalesce policy: a paused dashboard ends with the newest value of every key, never an older one after a newer, with fewer events', async (t) => {
  const maxBufferBytes = 256 * KiB
  const { app, wsUrl } = await startHerald(t, {
    config: { maxBufferBytes, namespaces: { namespaces: { dash: { backpressure: 'coalesce', coalesceKey: 'key' } } }, history: { ...DEFAULTS.history, size: 10_000 } }
  })
  const ch = 'dash:1'
  const live = await LiteWs.connect(t, wsUrl, 'live')
  const slow = await LiteWs.connect(t, wsUrl, 'slow')
  await live.subscribe(ch)
  await slow.subscribe(ch)

  // 12 keys updated in an irregular (but reproducible) order, as a dashboard's metrics are.
  const KEYS = Array.from({ length: 12 }, (_, i) => 'k' + i)
  let seed = 7
  const order: string[] = []
  const N = 3000
  for (let i = 0; i < N; i++) { seed = (seed * 1103515245 + 12345) % 2 ** 31; order.push(KEYS[(seed >>> 16) % KEYS.length]) }
  const newest = new Map<string, number>()
  order.forEach((k, i) => newest.set(k, i + 1))
  assert.equal(newest.size, KEYS.length, 'every key is updated')
  const pad = 'r'.repeat(4000)

  slow.pause()
  await blast(app, ch, N, (n) => ({ key: order[n - 1], v: n, pad }), { concurrency: 2 })
  await until(() => live.events(ch).length >= N, 'the live dashboard receives every update')
  assertExactly(live.events(ch).map((e) => e.offset!), 1, N, 'the dashboard that keeps up')
  assert.equal(serverConnection(app, slow.client) !== undefined, true, 'the slow dashboard is still connected')

  slow.resume()
  await until(() => KEYS.every((k) => slow.events(ch).some((e) => e.key === k && e.v === newest.get(k))), 'the slow dashboard ends with the newest value of every key', 10_000)
  // A barrier instead of a pause: one more update (a key of its own), published now. Once it is in, anything
  // still queued for the slow dashboard before it (a straggler, an older value) is in too.
  await blast(app, ch, 1, (n) => ({ key: 'barrier', v: n, pad: '' }), { from: N + 1 })
  await until(() => slow.events(ch).some((e) => e.offset === N + 1), 'the barrier update reaches the slow dashboard', 10_000)
  assert.equal(slow.events(ch).at(-1)!.offset, N + 1, 'nothing after the barrier')
  const got = slow.events(ch).filter((e) => e.offset! <= N)
  t.diagnostic(`slow dashboard: ${got.length} of ${N} events`)
  assert.ok(got.length < N, `coalescing delivered ${got.length} of ${N} events`)
  assert.equal(slow.closed, null)
  assert.equal(slow.log.filter((r) => r.type === 'unsubscribed').length, 0, 'the queue never overflowed (12 keys fit)')
  for (const k of KEYS) {
    const values = got.filter((e) => e.key === k).map((e) => e.v!)
    assert.ok(values.every((v, i) => i === 0 || v > values[i - 1]), `key ${k}: an older value after a newer one: ${JSON.stringify(values.slice(-20))}`)
    assert.equal(values[values.length - 1], newest.get(k), `key ${k} ends with its newest value`)
  }
  // Every value is what was published at that offset; offsets only skip (superseded events), never go back.
  for (const e of got) assert.equal(e.v, e.offset)
  const offsets = got.map((e) => e.offset!)
  const back = offsets.findIndex((o, i) => i > 0 && o <= offsets[i - 1])
  assert.equal(back, -1, `offsets went back at #${back}: … ${JSON.stringify(offsets.slice(Math.max(0, back - 3), back + 3))} … (a client resuming from its last offset would get older values again)`)
})

// ---------------------------------------------------------------- SSE

/** An SSE reader on node:http whose reading can be paused (the HTTP client then stops reading the socket). */
class PausableSse {
  readonly messages: Array<{ id?: string, data: Frame }> = []
  ended = false
  private buf = ''
  private constructor (readonly req: ClientRequest, readonly res: IncomingMessage) {
    res.setEncoding('utf8')
    res.on('data', (chunk: string) => {
      this.buf += chunk
      let at
      while ((at = this.buf.indexOf('\n\n')) !== -1) {
        const block = this.buf.slice(0, at)
        this.buf = this.buf.slice(at + 2)
        let id: string | undefined
        let data = ''
        for (const line of block.split('\n')) {
          if (line.startsWith('id: ')) id = line.slice(4)
          else if (line.startsWith('data: ')) data += line.slice(6)
        }
        if (data === '') continue
        const f = JSON.parse(data) as Frame
        if (f.type === 'event') f.data = { n: f.data?.n }
        this.messages.push({ id, data: f })
      }
    })
    res.on('end', () => { this.ended = true })
    res.on('close', () => { this.ended = true })
  }

  static async open (t: TestContext, url: string, channel: string): Promise<PausableSse> {
    return await new Promise((resolve, reject) => {
      const req = httpGet(`${url}/v1/sse?channel=${encodeURIComponent(channel)}`, { headers: { authorization: `Bearer ${token({ sub: 'sse-slow' })}`, accept: 'text/event-stream' } }, (res) => {
        if (res.statusCode !== 200) { reject(new Error(`sse status ${res.statusCode}`)); return }
        const c = new PausableSse(req, res)
        t.after(() => req.destroy())
        resolve(c)
      })
      req.on('error', reject)
    })
  }

  events (): Frame[] { return this.messages.map((m) => m.data).filter((f) => f.type === 'event') }
  get lastEventId (): string | undefined {
    for (let i = this.messages.length - 1; i >= 0; i--) if (this.messages[i].id !== undefined) return this.messages[i].id
    return undefined
  }
}

test('SSE under the same bound: a paused stream gets disconnect 4001 and ends; Last-Event-ID resumes it without loss', async (t) => {
  const maxBufferBytes = 64 * KiB
  const { app, url } = await startHerald(t, { config: { maxBufferBytes, history: { ...DEFAULTS.history, size: 10_000 } } })
  const ch = 'sse:slow'
  const reader = await SseClient.open(url, [ch], { token: token({ sub: 'sse-reader' }) })
  t.after(() => reader.close())
  await reader.waitFor((m) => m.data.type === 'subscribed')
  const slow = await PausableSse.open(t, url, ch)
  await until(() => slow.messages.some((m) => m.data.type === 'subscribed'), 'the slow stream is subscribed')
  const slowId = slow.messages[0].data.client as string
  assert.ok(serverConnection(app, slowId) !== undefined)
  slow.res.pause()
  const pad = 's'.repeat(4000)

  let evicted = false
  const first = await blast(app, ch, 8000, (n) => ({ n, pad }), {
    after: () => { evicted = serverConnection(app, slowId) === undefined },
    stop: () => evicted
  })
  assert.ok(evicted, `the paused stream was not evicted after ${first} events`)
  assert.equal(app.herald.connections.count('sse'), 1, 'the reader is still connected')
  assert.equal(await evictions(app, 'sse', 'disconnect'), 1)
  await blast(app, ch, 30, (n) => ({ n, pad }), { from: first + 1 })
  const M = first + 30

  slow.res.resume()
  await until(() => slow.ended, 'the evicted stream ends', 5000)
  const lastMsg = slow.messages[slow.messages.length - 1].data
  assert.equal(lastMsg.type, 'disconnect', 'the stream ends with a disconnect frame')
  assert.deepEqual([lastMsg.code, lastMsg.reconnect], [4001, true])
  const got = slow.events().map((e) => e.offset as number)
  assertExactly(got, 1, got.length, 'the evicted stream')
  assert.ok(got.length < M)

  // The reconnect (as EventSource does it): Last-Event-ID = the last id received.
  const resumed = await SseClient.open(url, [ch], { token: token({ sub: 'sse-slow' }), lastEventId: slow.lastEventId })
  t.after(() => resumed.close())
  const sub = await resumed.waitFor((m) => m.data.type === 'subscribed')
  assert.equal(sub.data.recovered, true)
  assert.equal(sub.data.replayed, M - got.length)
  await until(() => resumed.events(ch).length >= M - got.length || resumed.ended, 'the resumed stream catches up', 10_000)
  const ending = resumed.messages.find((m) => m.data.type === 'disconnect')?.data
  assert.equal(resumed.ended, false,
    `the resumed stream, read as fast as possible, was ended (${JSON.stringify(ending)}) after ${resumed.events(ch).length} of the ${M - got.length} replayed events`)
  assertExactly(resumed.events(ch).map((e) => e.offset as number), got.length + 1, M, 'the resumed stream')
  assert.equal(resumed.ended, false)
  await reader.waitEvents(ch, M, 10_000)
  assertExactly(reader.events(ch).map((e) => e.offset as number), 1, M, 'the SSE reader that keeps up')
})

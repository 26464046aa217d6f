import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, connect, type Server, type Socket } from 'node:net'
import WS from 'ws'
import { createSigner } from 'fast-jwt'
import { publish, redisSkipReason, sleep, startHerald, startRedis, token, until } from './helper.js'
import {
  createClient, HeraldError, type ClientOptions, type HeraldClient, type HeraldEvent, type RecoveryFailed, type StateChange,
  type Subscription, type SubscribedInfo, type WebSocketConstructor, type WebSocketLike
} from '../client/index.js'

// The client against a real Herald (and a real Redis where a restart or a second node is involved). Network faults
// are real too: a TCP proxy between client and server cuts connections, refuses new ones, freezes them (a dead peer
// that TCP does not notice) or refuses WebSocket upgrades (a proxy that cannot carry WebSockets).

const FAST = { min: 20, max: 300, factor: 2 }
/** Failure bound of waits for something the client does on its own schedule: when to call it a hang, not how soon. */
const HANG_MS = 10_000
const NodeWebSocket = WS as unknown as WebSocketConstructor

// ------------------------------------------------------------------ helpers

function client (t: TestContext, options: Partial<ClientOptions> & { url: string }): HeraldClient {
  const c = createClient({ token: token(), WebSocket: NodeWebSocket, backoff: FAST, ...options })
  t.after(() => c.close())
  return c
}

/** Records what the application sees. */
function collect (sub: Subscription): HeraldEvent[] {
  const events: HeraldEvent[] = []
  sub.on('event', (e) => events.push(e))
  return events
}

function states (c: HeraldClient): StateChange[] {
  const out: StateChange[] = []
  c.on('state', (s) => out.push(s))
  return out
}

async function next<T> (on: (cb: (v: T) => void) => void, what: string, timeoutMs = 5000): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out waiting for ' + what)), timeoutMs)
    on((v) => { clearTimeout(timer); resolve(v) })
  })
}

const subscribed = async (sub: Subscription, timeoutMs?: number): Promise<SubscribedInfo> =>
  await next<SubscribedInfo>((cb) => sub.once('subscribed', cb), `subscribed ${sub.channel}`, timeoutMs)

async function waitState (c: HeraldClient, state: string, timeoutMs = 5000): Promise<void> {
  await until(() => c.state === state, `client state ${state} (is ${c.state})`, timeoutMs)
}

/** The `exp` of a JWT (seconds). */
function expOf (jwt: string): number {
  return (JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()) as { exp: number }).exp
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

async function publishRange (base: string, channel: string, from: number, to: number): Promise<void> {
  for (const n of range(from, to)) {
    const res = await publish(base, channel, { n })
    assert.equal(res.status, 201, JSON.stringify(res.body))
  }
}

/** Every offset exactly once, in order, and each carrying the data published with it. */
function assertExactlyOnce (events: HeraldEvent[], from: number, to: number): void {
  assert.deepEqual(events.map((e) => e.offset), range(from, to), 'offsets exactly once, in order')
  assert.deepEqual(events.map((e) => (e.data as { n: number }).n), range(from, to), 'payloads match offsets')
}

async function history (base: string, channel: string): Promise<Array<{ offset: number, data: any, event?: string }>> {
  const res = await fetch(`${base}/v1/channels/${encodeURIComponent(channel)}/events?since=0&limit=1000`, { headers: { authorization: `Bearer ${token()}` } })
  assert.equal(res.status, 200)
  return (await res.json() as { events: Array<{ offset: number, data: any }> }).events
}

/**
 * A loopback TCP proxy in front of Herald. `cut()` resets every connection; `blocked` resets new ones (the server
 * looks down); `freeze()` makes the current connections silently drop everything (a dead peer TCP has not noticed);
 * `refuseUpgrades` answers WebSocket upgrades with 502 like a proxy without WebSocket support; `target` may be
 * switched to another node (a load balancer).
 */
class TcpProxy {
  blocked = false
  refuseUpgrades = false
  private readonly pairs = new Set<{ client: Socket, upstream?: Socket, frozen: boolean }>()
  private server!: Server
  port = 0
  upgradesRefused = 0

  private constructor (public target: number) {}

  static async start (t: TestContext, target: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(target)
    proxy.server = createServer((socket) => proxy.accept(socket))
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve))
    proxy.port = (proxy.server.address() as { port: number }).port
    t.after(async () => {
      proxy.cut()
      await new Promise<void>((resolve) => proxy.server.close(() => resolve()))
    })
    return proxy
  }

  get url (): string { return `http://127.0.0.1:${this.port}` }

  cut (): void {
    for (const pair of this.pairs) { pair.client.destroy(); pair.upstream?.destroy() }
    this.pairs.clear()
  }

  freeze (): void { for (const pair of this.pairs) pair.frozen = true }

  private accept (client: Socket): void {
    client.on('error', () => {})
    if (this.blocked) { client.destroy(); return }
    const pair: { client: Socket, upstream?: Socket, frozen: boolean } = { client, frozen: false }
    this.pairs.add(pair)
    client.on('close', () => { pair.upstream?.destroy(); this.pairs.delete(pair) })
    let head = Buffer.alloc(0)
    const first = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end === -1 && head.length < 65536) return
      client.off('data', first)
      if (this.refuseUpgrades && /^upgrade:\s*websocket/im.test(head.toString('latin1', 0, end === -1 ? head.length : end))) {
        this.upgradesRefused++
        const body = 'this proxy cannot carry WebSockets'
        client.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`)
        return
      }
      const upstream = connect(this.target, '127.0.0.1')
      pair.upstream = upstream
      upstream.on('error', () => {})
      upstream.on('close', () => client.destroy())
      upstream.write(head)
      client.on('data', (d: Buffer) => { if (!pair.frozen) upstream.write(d) })
      upstream.on('data', (d: Buffer) => { if (!pair.frozen) client.write(d) })
    }
    client.on('data', first)
  }
}

// ------------------------------------------------------------------ restart, drain, heartbeat

test('reconnects after the server restarts on the same port, resuming from Redis: every event once, in order', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const a = await startHerald(t, { redisUrl: redis.url })
  const b = await startHerald(t, { redisUrl: redis.url }) // another node, to publish while `a` is down
  const c = client(t, { url: a.url })
  const seen = states(c)
  let retries = 0
  c.on('reconnect', () => { retries++ })
  const sub = c.subscribe('restart:room')
  const got = collect(sub)
  await subscribed(sub)
  await publishRange(b.url, 'restart:room', 1, 5)
  await until(() => got.length === 5, 'first five events')

  await a.app.close() // drains: the socket is closed with 1012, and the port stops answering
  await waitState(c, 'reconnecting')
  await publishRange(b.url, 'restart:room', 6, 10) // published while the client has no server
  // A retry is scheduled on the loss, and another when an attempt fails: two mean the client has tried (and
  // failed) while nothing listened on the port.
  await until(() => retries >= 2, 'a reconnect attempt failed while the server was down', HANG_MS)
  await startHerald(t, { redisUrl: redis.url, port: a.port })
  await publishRange(b.url, 'restart:room', 11, 15)
  await until(() => got.length >= 15, `all 15 events (got ${got.length})`, HANG_MS)
  // A barrier instead of a pause: once 16 is in, a late duplicate of anything before it would be in too.
  await publishRange(b.url, 'restart:room', 16, 16)
  await until(() => got.some((e) => e.offset === 16), 'the barrier event')
  assertExactlyOnce(got, 1, 16)
  assert.equal(c.state, 'connected')
  assert.equal(c.transport, 'websocket')
  // app.close() should say 1012 (reconnect elsewhere); today @fastify/websocket's preClose closes the sockets first,
  // without a code (1005) — reported with a patch. The client reconnects either way.
  const lost = seen.find((s) => s.from === 'connected' && s.to === 'reconnecting')
  assert.ok(lost !== undefined && /closed 10(05|12)/.test(lost.reason), `lost with a close: ${JSON.stringify(seen)}`)
  assert.ok(seen.filter((s) => s.to === 'connected').length === 2, 'connected twice')
  assert.equal(sub.state, 'subscribed')
})

test('a draining node (1012) is left at once for another one behind the same address; the stream resumes there', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const a = await startHerald(t, { redisUrl: redis.url })
  const b = await startHerald(t, { redisUrl: redis.url })
  const proxy = await TcpProxy.start(t, a.port)
  // A long backoff: only a 1012 (jitter within backoff.min, no backoff growth) brings the client back quickly.
  const c = client(t, { url: proxy.url, backoff: { min: 400, max: 20_000 } })
  const retries: number[] = []
  c.on('reconnect', (r) => retries.push(r.delay))
  const sub = c.subscribe('drain:room')
  const got = collect(sub)
  await subscribed(sub)
  await publishRange(b.url, 'drain:room', 1, 3)
  await until(() => got.length === 3, 'first events')
  proxy.target = b.port // the load balancer sends new connections to b …
  a.app.herald.drain() // … and a tells its clients to go (close 1012)
  await publishRange(b.url, 'drain:room', 4, 6)
  await until(() => got.length === 6, 'events after the drain', HANG_MS)
  assertExactlyOnce(got, 1, 6)
  assert.equal(retries.length, 1, 'one retry')
  // The delay the client itself chose for that retry (a value it reports, not a measured time): a 1012 is
  // retried after a jitter within backoff.min, not after a backoff step.
  assert.ok(retries[0] < 400, `jittered within backoff.min: ${retries[0]}`)
})

test('a connection that goes silent (no FIN, no RST) is noticed by the heartbeat and replaced', async (t) => {
  const h = await startHerald(t)
  const proxy = await TcpProxy.start(t, h.port)
  const c = client(t, { url: proxy.url, heartbeat: { interval: 100, timeout: 400 } })
  const seen = states(c)
  const sub = c.subscribe('hb:room')
  const got = collect(sub)
  await subscribed(sub)
  await publishRange(h.url, 'hb:room', 1, 2)
  await until(() => got.length === 2, 'events before the freeze')
  proxy.freeze()
  await publishRange(h.url, 'hb:room', 3, 4) // sent into the void
  // A frozen connection gives TCP nothing to notice (no FIN, no RST) and the proxy never ends it: only the
  // client's heartbeat can. The reason of the transition says it was the heartbeat.
  await until(() => seen.some((s) => s.to === 'reconnecting'), 'the dead connection noticed', HANG_MS)
  assert.match(seen.find((s) => s.to === 'reconnecting')!.reason, /heartbeat timeout/)
  await waitState(c, 'connected', HANG_MS)
  await until(() => got.length === 4, 'events sent during the freeze, recovered', HANG_MS)
  await publishRange(h.url, 'hb:room', 5, 5)
  await until(() => got.length === 5, 'live again')
  assertExactlyOnce(got, 1, 5)
})

// ------------------------------------------------------------------ publishing

/** A WebSocket that loses the first publish ack: the connection dies right after the server stored the event. */
function ackLosingWebSocket (log: { publishIds: string[], dropped?: string }): WebSocketConstructor {
  return class AckLosingWebSocket implements WebSocketLike {
    onopen: ((e: any) => void) | null = null
    onmessage: ((e: any) => void) | null = null
    onclose: ((e: any) => void) | null = null
    onerror: ((e: any) => void) | null = null
    private readonly ws: WS
    private dead = false

    constructor (url: string) {
      this.ws = new WS(url)
      this.ws.onopen = (e) => this.onopen?.(e)
      this.ws.onerror = (e) => this.onerror?.(e)
      this.ws.onclose = (e) => this.onclose?.(e)
      this.ws.onmessage = (e) => {
        if (this.dead) return
        const frame = JSON.parse(String(e.data)) as { type: string, id?: string, offset?: number }
        if (frame.type === 'ack' && frame.offset !== undefined && log.dropped === undefined) {
          log.dropped = frame.id
          this.dead = true
          this.ws.terminate()
          return
        }
        this.onmessage?.(e)
      }
    }

    get readyState (): number { return this.ws.readyState }
    send (data: string): void {
      const frame = JSON.parse(data) as { type: string, id?: string }
      if (frame.type === 'publish') log.publishIds.push(frame.id!)
      this.ws.send(data)
    }

    close (code?: number, reason?: string): void { this.ws.close(code, reason) }
    terminate (): void { this.ws.terminate() }
  }
}

test('a publish whose ack was lost with the connection is resent with the same id and stored once', async (t) => {
  const h = await startHerald(t)
  const log: { publishIds: string[], dropped?: string } = { publishIds: [] }
  const c = client(t, { url: h.url, WebSocket: ackLosingWebSocket(log) })
  const sub = c.subscribe('ack:room')
  const got = collect(sub)
  await subscribed(sub)
  const ack = await c.publish('ack:room', { n: 1 }, { event: 'msg' })
  assert.ok(log.dropped !== undefined, 'the first ack was lost')
  assert.deepEqual(log.publishIds, [log.dropped, log.dropped], 'sent twice, with the same id')
  assert.equal(ack.offset, 1)
  assert.equal(ack.duplicate, true, 'the retry was recognised as a duplicate')
  const second = await c.publish('ack:room', { n: 2 })
  assert.equal(second.offset, 2)
  assert.equal(second.duplicate, false)
  const stored = await history(h.url, 'ack:room')
  assert.deepEqual(stored.map((e) => [e.offset, e.data.n]), [[1, 1], [2, 2]], 'stored once each')
  await until(() => got.length === 2, 'both events delivered')
  // A barrier instead of a pause: once 3 is in, a duplicate delivery of 1 or 2 would be in too.
  await publishRange(h.url, 'ack:room', 3, 3)
  await until(() => got.some((e) => e.offset === 3), 'the barrier event')
  assertExactlyOnce(got, 1, 3)
})

test('publishes made while disconnected wait in the offline queue and are sent in order after the reconnect', async (t) => {
  const h = await startHerald(t)
  const proxy = await TcpProxy.start(t, h.port)
  const c = client(t, { url: proxy.url, offlineQueue: { max: 3, overflow: 'reject-newest' } })
  await waitState(c, 'connected')
  proxy.blocked = true
  proxy.cut()
  await waitState(c, 'reconnecting')
  const acks = [1, 2, 3].map(async (n) => await c.publish('offline:room', { n }))
  const overflow = c.publish('offline:room', { n: 4 })
  await assert.rejects(overflow, (err: HeraldError) => err.code === 'HERALD_CLIENT_QUEUE_OVERFLOW')
  assert.equal(c.pendingPublishes, 3)
  assert.deepEqual(await history(h.url, 'offline:room'), [], 'nothing sent while offline')
  proxy.blocked = false
  const results = await Promise.all(acks)
  assert.deepEqual(results.map((a) => a.offset), [1, 2, 3], 'acknowledged in publish order')
  assert.deepEqual((await history(h.url, 'offline:room')).map((e) => e.data.n), [1, 2, 3], 'stored once each, in order')
  assert.equal(c.pendingPublishes, 0)
})

// ------------------------------------------------------------------ tokens

test('tokens are renewed before they expire without dropping the connection or its subscriptions (WebSocket and SSE)', async (t) => {
  const h = await startHerald(t)
  await Promise.all((['websocket', 'sse'] as const).map(async (transport) => {
    const channel = `refresh:${transport}`
    let calls = 0
    const exps: number[] = []
    const c = client(t, {
      url: h.url,
      transports: [transport],
      token: undefined,
      getToken: async () => {
        calls++
        const tok = token({ sub: 'refresher' }, { expiresInMs: 2000 })
        exps.push(expOf(tok))
        return tok
      }
    })
    const seen = states(c)
    const sub = c.subscribe(channel)
    const got = collect(sub)
    await subscribed(sub)
    // Publish a stream (one event about every 100 ms) until the token was renewed twice (getToken called 3
    // times) and the clock is a second past the second token's exp: the server closes a connection at its
    // token's exp unless a refresh came first, so by then an unrenewed connection would have been dropped twice.
    const deadline = Date.now() + 3 * HANG_MS
    let n = 0
    while (calls < 3 || Date.now() < exps[1] * 1000 + 1000) {
      if (Date.now() > deadline) throw new Error(`${transport}: timed out waiting for two token renewals (getToken called ${calls} times)`)
      await publishRange(h.url, channel, ++n, n)
      await sleep(100) // the pace of the stream, not a wait for anything
    }
    await until(() => got.length === n, `${transport}: all ${n} events (got ${got.length})`)
    assertExactlyOnce(got, 1, n)
    assert.ok(calls >= 3, `${transport}: getToken called ${calls} times`)
    assert.deepEqual(seen.map((s) => s.to), ['connecting', 'connected'], `${transport}: never disconnected: ${JSON.stringify(seen)}`)
  }))
})

test('a token refused as expired (close 4501) is replaced through getToken and the subscription resumes', async (t) => {
  const h = await startHerald(t)
  let calls = 0
  const c = client(t, {
    url: h.url,
    token: undefined,
    refresh: false, // let it expire
    // The first token is short and left to expire; the one fetched for the reconnect lasts, so the client ends
    // in a steady state to check.
    getToken: async () => { calls++; return token({ sub: 'expiring' }, { expiresInMs: calls === 1 ? 1500 : 3600_000 }) }
  })
  const seen = states(c)
  const sub = c.subscribe('expire:room')
  const got = collect(sub)
  await subscribed(sub)
  // Publish a stream (one event about every 50 ms) across the expiry, until the client was refused as expired,
  // got a new token and is subscribed again; then a few more, live.
  const back = (): boolean => calls >= 2 && c.state === 'connected' && sub.state === 'subscribed' && seen.some((s) => s.to === 'reconnecting')
  const deadline = Date.now() + 2 * HANG_MS
  let n = 0
  while (!back()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for the expiry and the resume: ${JSON.stringify(seen)}`)
    await publishRange(h.url, 'expire:room', ++n, n)
    await sleep(50) // the pace of the stream, not a wait for anything
  }
  await publishRange(h.url, 'expire:room', n + 1, n + 3)
  n += 3
  await until(() => got.length === n, `all ${n} events (got ${got.length})`)
  assertExactlyOnce(got, 1, n)
  assert.ok(calls >= 2, `getToken called again (${calls})`)
  const expired = seen.find((s) => s.to === 'reconnecting')
  assert.ok(expired !== undefined && /token expired/.test(expired.reason), JSON.stringify(seen))
  assert.equal(c.state, 'connected')
})

test('a bad token closes the client for good (no reconnect loop); a forbidden channel fails only its subscription', async (t) => {
  const h = await startHerald(t)
  let sockets = 0
  class Counting extends WS { constructor (url: string) { super(url); sockets++ } }
  const bad = createSigner({ key: 'another-secret-0123456789abcdef' })({ sub: 'mallory', subscribe: ['*'] })
  const c = client(t, { url: h.url, token: bad, WebSocket: Counting as unknown as WebSocketConstructor })
  const errors: HeraldError[] = []
  c.on('error', (e) => errors.push(e))
  let retries = 0
  c.on('reconnect', () => { retries++ })
  const seen = states(c)
  await waitState(c, 'closed')
  // No waiting for a retry that should not come: every retry is scheduled (and announced by `reconnect`) before
  // it is made, none was, and `closed` is final (nothing is scheduled from it).
  assert.equal(retries, 0, 'no retry was scheduled')
  assert.equal(sockets, 1, 'one attempt, no retry')
  assert.equal(errors.at(-1)?.code, 'HERALD_ERR_UNAUTHORIZED')
  assert.match(seen.at(-1)!.reason, /401|unauthorized/i)
  await assert.rejects(c.publish('x', 1), (err: HeraldError) => err.code === 'HERALD_CLIENT_CLOSED')

  // Forbidden channel: WebSocket and SSE both report it on the subscription and keep the others going.
  for (const transport of ['websocket', 'sse'] as const) {
    const limited = client(t, { url: h.url, transports: [transport], token: token({ sub: 'limited', subscribe: ['open:*'] }) })
    const denied = limited.subscribe('secret:room')
    const allowed = limited.subscribe(`open:${transport}`)
    const got = collect(allowed)
    const allowedSubscribed = subscribed(allowed)
    const err = await next<HeraldError>((cb) => denied.once('error', cb), `${transport}: forbidden error`)
    assert.equal(err.code, 'HERALD_ERR_FORBIDDEN')
    assert.equal(denied.state, 'failed')
    await allowedSubscribed
    await publishRange(h.url, `open:${transport}`, 1, 2)
    await until(() => got.length === 2, `${transport}: allowed channel still flows`)
    assert.equal(limited.state, 'connected')
  }
})

// ------------------------------------------------------------------ recovery

test('recovery-failed when history no longer reaches back to the last position; live delivery continues', async (t) => {
  const h = await startHerald(t, { config: { namespaces: { namespaces: { tiny: { historySize: 3 } } } } })
  const proxy = await TcpProxy.start(t, h.port)
  const c = client(t, { url: proxy.url })
  const sub = c.subscribe('tiny:room')
  const got = collect(sub)
  const failures: RecoveryFailed[] = []
  sub.on('recovery-failed', (f) => failures.push(f))
  await subscribed(sub)
  await publishRange(h.url, 'tiny:room', 1, 1)
  await until(() => got.length === 1, 'first event')
  proxy.blocked = true
  proxy.cut()
  await waitState(c, 'reconnecting')
  await publishRange(h.url, 'tiny:room', 2, 10) // history keeps only 8..10
  const resubscribed = subscribed(sub)
  proxy.blocked = false
  const again = await resubscribed
  assert.equal(again.recovered, false)
  assert.equal(failures.length, 1)
  assert.equal(failures[0].reason, 'history_trimmed')
  assert.deepEqual(failures[0].previous, { offset: 1, epoch: got[0].epoch }, 'the position of the last event it had')
  assert.equal(failures[0].offset, 10)
  await publishRange(h.url, 'tiny:room', 11, 11)
  await until(() => got.length === 2, 'live event after the failed recovery')
  assert.deepEqual(got.map((e) => e.offset), [1, 11], 'nothing replayed or duplicated: the app was told to reload')
})

test('Redis comes back empty: told to resubscribe, the client does so from its position and reports recovery-failed (WebSocket and SSE)', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const h = await startHerald(t, { redisUrl: redis.url })
  const clients = (['websocket', 'sse'] as const).map((transport) => {
    const c = client(t, { url: h.url, transports: [transport] })
    const sub = c.subscribe('volatile:room')
    const failures: RecoveryFailed[] = []
    sub.on('recovery-failed', (f) => failures.push(f))
    return { transport, c, sub, got: collect(sub), failures, seen: states(c) }
  })
  await Promise.all(clients.map(async (x) => await subscribed(x.sub)))
  await publishRange(h.url, 'volatile:room', 1, 3)
  await until(() => clients.every((x) => x.got.length === 3), 'first events on both')
  const oldEpoch = clients[0].got[0].epoch

  await redis.stop('SIGKILL')
  await redis.restart() // no persistence: the channel's stream is gone, a new epoch starts
  await until(() => clients.every((x) => x.failures.length === 1), 'recovery-failed on both', 8000)
  for (const x of clients) {
    assert.equal(x.failures[0].reason, 'epoch_changed', x.transport)
    assert.deepEqual(x.failures[0].previous, { offset: 3, epoch: oldEpoch }, x.transport)
    assert.notEqual(x.failures[0].epoch, oldEpoch)
  }
  // Live again, in the new epoch (publishes may be refused with 503 until the node is back on Redis).
  await until(async () => (await publish(h.url, 'volatile:room', { n: 4 })).status === 201, 'a publish after the restart', 5000)
  await publishRange(h.url, 'volatile:room', 5, 5)
  await until(() => clients.every((x) => x.got.length === 5), 'new events on both')
  for (const x of clients) {
    assert.deepEqual(x.got.map((e) => [e.epoch === oldEpoch ? 'old' : 'new', e.offset, (e.data as { n: number }).n]),
      [['old', 1, 1], ['old', 2, 2], ['old', 3, 3], ['new', 1, 4], ['new', 2, 5]], x.transport)
    assert.equal(x.c.state, 'connected')
  }
  // The WebSocket itself stayed open: the server asked for a resubscription, not a reconnect.
  assert.deepEqual(clients[0].seen.map((s) => s.to), ['connecting', 'connected'])
})

test('subscribe with since replays from that position, or reports why it cannot', async (t) => {
  const h = await startHerald(t)
  await publishRange(h.url, 'since:room', 1, 5)
  const top = await fetch(`${h.url}/v1/channels/since:room/events?since=0&limit=0`, { headers: { authorization: `Bearer ${token()}` } }).then(async (r) => await r.json() as { epoch: string })
  for (const transport of ['websocket', 'sse', 'long-poll'] as const) {
    const c = client(t, { url: h.url, transports: [transport] })
    const sub = c.subscribe('since:room', { since: { offset: 2, epoch: top.epoch } })
    const got = collect(sub)
    const info = await subscribed(sub)
    assert.equal(info.recovered, true, transport)
    await until(() => got.length === 3, `${transport}: replayed 3..5`)
    assert.deepEqual(got.map((e) => e.offset), [3, 4, 5], transport)
    const other = c.subscribe('since:other', { since: { offset: 2, epoch: 'not-the-epoch' } })
    const failed = await next<RecoveryFailed>((cb) => other.once('recovery-failed', cb), `${transport}: recovery-failed`)
    assert.equal(failed.reason, 'epoch_changed', transport)
    c.close()
  }
})

// ------------------------------------------------------------------ transport fallback

test('falls back to SSE when a proxy refuses WebSocket upgrades: exactly once across a dropped stream and a reopen, publishes over REST', async (t) => {
  const h = await startHerald(t)
  const proxy = await TcpProxy.start(t, h.port)
  proxy.refuseUpgrades = true
  const c = client(t, { url: proxy.url })
  const transports: string[] = []
  c.on('transport', (e) => transports.push(`${String(e.from)}->${e.to}`))
  const sub = c.subscribe('fb:sse')
  const got = collect(sub)
  await subscribed(sub)
  assert.equal(c.transport, 'sse')
  // Twice: one failure while the server answers may be a restart's race (the attempt failed before it was back).
  assert.ok(proxy.upgradesRefused >= 2, `the WebSocket was really tried, twice, and refused (${proxy.upgradesRefused})`)
  assert.deepEqual(transports, ['null->sse'])
  await publishRange(h.url, 'fb:sse', 1, 3)
  await until(() => got.length === 3, 'first events over SSE')

  proxy.cut() // the stream drops
  await publishRange(h.url, 'fb:sse', 4, 6)
  await until(() => got.length === 6, 'events across the dropped stream')

  // A second subscription reopens the stream from the current cursor, while events keep coming.
  const publishing = publishRange(h.url, 'fb:sse', 7, 12)
  const other = c.subscribe('fb:other')
  const otherGot = collect(other)
  await subscribed(other)
  await publishing
  const ack = await c.publish('fb:other', { n: 1 }) // REST, since SSE only receives
  assert.equal(ack.offset, 1)
  await until(() => got.length === 12 && otherGot.length === 1, 'both channels after the reopen')
  // Barriers instead of a pause: once these are in, a late duplicate of anything before them would be in too.
  await publishRange(h.url, 'fb:sse', 13, 13)
  await publishRange(h.url, 'fb:other', 2, 2)
  await until(() => got.some((e) => e.offset === 13) && otherGot.some((e) => e.offset === 2), 'the barrier events')
  assertExactlyOnce(got, 1, 13)
  assertExactlyOnce(otherGot, 1, 2)
  assert.equal(c.transport, 'sse')
})

test('falls back to long-poll when SSE is blocked too: exactly once across a dropped poll', async (t) => {
  const h = await startHerald(t)
  const proxy = await TcpProxy.start(t, h.port)
  proxy.refuseUpgrades = true
  let sseTried = 0
  // A network path that drops SSE requests (like a proxy that buffers event streams to death).
  const fetchWithoutSse = async (url: string, init?: RequestInit): Promise<Response> => {
    if (url.includes('/v1/sse')) { sseTried++; throw new TypeError('fetch failed (SSE blocked on this path)') }
    return await fetch(url, init)
  }
  const c = client(t, { url: proxy.url, fetch: fetchWithoutSse, pollTimeout: 5 })
  const sub = c.subscribe('fb:poll')
  const got = collect(sub)
  await subscribed(sub)
  assert.equal(c.transport, 'long-poll')
  assert.ok(sseTried >= 1 && proxy.upgradesRefused >= 1, 'WebSocket and SSE were tried first')
  await publishRange(h.url, 'fb:poll', 1, 3)
  await until(() => got.length === 3, 'events over long-poll')
  proxy.cut()
  await publishRange(h.url, 'fb:poll', 4, 6)
  const ack = await c.publish('fb:poll', { n: 7 })
  assert.equal(ack.offset, 7)
  await until(() => got.length === 7, 'events across the dropped poll', HANG_MS)
  // A barrier instead of a pause: once 8 is in, a late duplicate of anything before it would be in too.
  await publishRange(h.url, 'fb:poll', 8, 8)
  await until(() => got.some((e) => e.offset === 8), 'the barrier event', HANG_MS)
  assertExactlyOnce(got, 1, 8)
  assert.equal(c.transport, 'long-poll')
})

test('upgrades back to WebSocket once it gets through, without losing or repeating an event', async (t) => {
  const h = await startHerald(t)
  const proxy = await TcpProxy.start(t, h.port)
  proxy.refuseUpgrades = true
  const c = client(t, { url: proxy.url, upgradeInterval: 200 })
  const sub = c.subscribe('up:room')
  const got = collect(sub)
  await subscribed(sub)
  assert.equal(c.transport, 'sse')
  const refusedAtStart = proxy.upgradesRefused
  let stop = false
  let n = 0
  const publishing = (async () => {
    while (!stop) { await publishRange(h.url, 'up:room', ++n, n); await sleep(15) } // the pace of the stream
  })()
  // An upgrade trial refused while on SSE (the first refusal was the initial attempt that led to SSE).
  await until(() => proxy.upgradesRefused > refusedAtStart, 'a failed upgrade attempt', HANG_MS)
  proxy.refuseUpgrades = false
  const switched = await next<{ from: string | null, to: string }>((cb) => c.on('transport', cb), 'the switch to websocket', HANG_MS)
  assert.deepEqual(switched, { from: 'sse', to: 'websocket' })
  // The stream goes on across the switch: a few events published after it arrive before the publisher stops.
  const atSwitch = n
  await until(() => got.some((e) => e.offset >= atSwitch + 5), 'events published after the switch', HANG_MS)
  stop = true
  await publishing
  await until(() => got.length === n, `all ${n} events (got ${got.length})`)
  // A barrier instead of a pause: once it is in, a late duplicate of anything before it would be in too.
  n++
  await publishRange(h.url, 'up:room', n, n)
  await until(() => got.some((e) => e.offset === n), 'the barrier event')
  assertExactlyOnce(got, 1, n)
  assert.equal(c.transport, 'websocket')
  assert.equal(c.state, 'connected')
})

// ------------------------------------------------------------------ presence

test('presence: join and leave reach subscription.on(join|leave) over WebSocket and SSE; presence() lists members', async (t) => {
  const h = await startHerald(t, { config: { namespaces: { namespaces: { chat: { presence: true, joinLeave: true } } }, presence: { ttlSeconds: 30, batchMs: 50 } } })
  const alice = client(t, { url: h.url, token: token({ sub: 'alice', info: { name: 'Alice' } }) })
  const carol = client(t, { url: h.url, transports: ['sse'], token: token({ sub: 'carol' }) })
  const aliceSub = alice.subscribe('chat:room')
  const carolSub = carol.subscribe('chat:room')
  const joins: Record<string, string[]> = { alice: [], carol: [] }
  const leaves: Record<string, string[]> = { alice: [], carol: [] }
  aliceSub.on('join', (j) => joins.alice.push(j.sub)).on('leave', (l) => leaves.alice.push(l.sub))
  carolSub.on('join', (j) => joins.carol.push(j.sub)).on('leave', (l) => leaves.carol.push(l.sub))
  await Promise.all([subscribed(aliceSub), subscribed(carolSub)])

  const bob = createClient({ url: h.url, token: token({ sub: 'bob', info: { name: 'Bob' } }), WebSocket: NodeWebSocket })
  const bobSub = bob.subscribe('chat:room')
  const bobJoin = next<{ sub: string, info?: unknown }>((cb) => aliceSub.on('join', (j) => { if (j.sub === 'bob') cb(j) }), 'bob joins')
  await subscribed(bobSub)
  assert.deepEqual((await bobJoin).info, { name: 'Bob' })
  await until(() => joins.carol.includes('bob'), 'carol (SSE) sees bob join')

  for (const c of [alice, carol]) { // WebSocket frame, and REST under SSE
    const list = await c.presence('chat:room')
    assert.deepEqual(list.members.map((m) => m.sub).sort(), ['alice', 'bob', 'carol'])
    assert.equal(list.count.members, 3)
  }
  bob.close()
  await until(() => leaves.alice.includes('bob') && leaves.carol.includes('bob'), 'both see bob leave')
  await assert.rejects(alice.presence('nopresence:x'), (err: HeraldError) => err.code === 'HERALD_ERR_PRESENCE_DISABLED')
})

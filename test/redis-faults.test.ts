/**
 * Herald on the Redis bus while its private redis-server crashes (SIGKILL) and comes back, under live
 * WebSocket and SSE subscribers:
 *  - with AOF (appendfsync always) the data survives: publishes during the outage fail fast with 503 and
 *    every 201-acknowledged event reaches each subscriber exactly once, in order, without a gap;
 *  - without persistence the channel comes back in a new epoch: subscribers are told they lost their place
 *    (never a silent gap) and a resume says recovered:false / epoch_changed.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createServer, connect, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { pino } from 'pino'
import { publish, redisSkipReason, sleep, startHerald, startRedis, token, until, SseClient, WsClient, type Frame } from './helper.js'
import { EventSource } from 'eventsource'
import { EMPTY_EPOCH } from '../src/bus/broker.js'
import { RedisBroker } from '../src/bus/broker-redis.js'
import { defaultConfig } from '../src/config.js'
import { CloseCodes } from '../src/protocol/codes.js'
import { decodeCursor } from '../src/protocol/cursor.js'

const skip = redisSkipReason()
/** ioredis reconnects with a backoff of up to 2 s; the hub then catches up from history. */
const RECOVERY_MS = 8000

async function readyz (url: string): Promise<{ status: number, body: any }> {
  const res = await fetch(`${url}/readyz`)
  return { status: res.status, body: await res.json() }
}

/**
 * What a well-behaved WebSocket client does: on `unsubscribed` with `resubscribe: true` it subscribes again
 * from the last position it saw. Records every `subscribed` answer so the test can check them.
 */
function autoResubscribe (ws: WsClient, channel: string): { resubscribed: Frame[] } {
  const state = { resubscribed: [] as Frame[] }
  let awaiting = false
  ws.socket.on('message', (raw) => {
    const f = JSON.parse(raw.toString()) as Frame
    if (f.type === 'unsubscribed' && f.channel === channel && f.resubscribe === true) {
      const last = ws.frames.filter((e) => e.type === 'event' && e.channel === channel).at(-1)
      awaiting = true
      ws.send({ type: 'subscribe', channel, since: last === undefined ? undefined : { offset: last.offset, epoch: last.epoch } })
    } else if (f.type === 'subscribed' && f.channel === channel && awaiting) {
      awaiting = false
      state.resubscribed.push(f)
    }
  })
  return state
}

/** What an EventSource does: when the stream ends, reopen it with the last `id:` as Last-Event-ID. */
class ResumingSse {
  readonly segments: SseClient[] = []
  private stopped = false
  private constructor (private readonly url: string, private readonly channels: string[]) {}

  static async open (t: TestContext, url: string, channels: string[]): Promise<ResumingSse> {
    const r = new ResumingSse(url, channels)
    r.segments.push(await SseClient.open(url, channels))
    t.after(() => { r.stopped = true; for (const s of r.segments) s.close() })
    void r.watch()
    return r
  }

  get current (): SseClient { return this.segments[this.segments.length - 1] }
  events (channel: string): Frame[] { return this.segments.flatMap((s) => s.events(channel)) }
  frames (): Frame[] { return this.segments.flatMap((s) => s.messages.map((m) => m.data)) }

  private async watch (): Promise<void> {
    while (!this.stopped) {
      const seg = this.current
      while (!seg.ended && !this.stopped) await sleep(20)
      if (this.stopped) return
      const lastEventId = this.segments.map((s) => s.lastEventId).filter((id) => id !== undefined).at(-1)
      for (;;) {
        if (this.stopped) return
        try {
          this.segments.push(await SseClient.open(this.url, this.channels, { lastEventId }))
          break
        } catch {
          await sleep(100)
        }
      }
    }
  }
}

/** A stock EventSource (the `eventsource` package): it reconnects by itself with Last-Event-ID. */
function stockEventSource (t: TestContext, url: string, channel: string): { messages: Array<{ data: Frame, lastEventId: string }>, sentLastEventIds: Array<string | undefined> } {
  const rec = { messages: [] as Array<{ data: Frame, lastEventId: string }>, sentLastEventIds: [] as Array<string | undefined> }
  const es = new EventSource(`${url}/v1/sse?channel=${encodeURIComponent(channel)}`, {
    fetch: async (input, init) => {
      rec.sentLastEventIds.push(init.headers['Last-Event-ID'] ?? init.headers['last-event-id'])
      return await fetch(input, { ...init, headers: { ...init.headers, authorization: `Bearer ${token()}` } })
    }
  })
  es.onmessage = (ev) => { rec.messages.push({ data: JSON.parse(ev.data) as Frame, lastEventId: ev.lastEventId }) }
  t.after(() => es.close())
  return rec
}

/**
 * A loopback TCP relay in front of Redis, so that one Herald node's reconnection can be held back while
 * Redis itself is up (as in a partition). With the gate shut, every connection it accepts is closed at once.
 */
async function gatedRelay (t: TestContext, targetPort: number): Promise<{ url: string, open: boolean }> {
  const sockets = new Set<Socket>()
  const relay = { url: '', open: true }
  const server = createServer((client) => {
    if (!relay.open) { client.destroy(); return }
    const upstream = connect(targetPort, '127.0.0.1')
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy() })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  relay.url = `redis://127.0.0.1:${(server.address() as { port: number }).port}`
  t.after(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return relay
}

/**
 * Checks that `events` are offsets 1..n, each exactly once, in epochs in line (one, or one going on in another
 * after the restart), and carry every acknowledged publish.
 */
function assertExactlyOnce (what: string, events: Frame[], acked: Array<{ offset: number, epoch: string, n: number }>): void {
  const offsets = events.map((e) => e.offset)
  assert.deepEqual(offsets, Array.from({ length: offsets.length }, (_, i) => i + 1), `${what}: consecutive offsets from 1, no gap, no duplicate`)
  epochsInLine(events.map((e) => e.epoch), events[0].epoch)
  for (const a of acked) {
    const got = events.filter((e) => e.offset === a.offset)
    assert.equal(got.length, 1, `${what}: acknowledged offset ${a.offset} delivered exactly once`)
    assert.equal(got[0].epoch, a.epoch)
    assert.deepEqual(got[0].data, { n: a.n }, `${what}: offset ${a.offset} carries the acknowledged publish`)
  }
}

/**
 * Epochs of consecutive events across one Redis restart: `first` for a run, then (at most) one other for the rest —
 * the epoch a restarted Redis goes on in (broker-redis.ts). Returns the last one.
 */
function epochsInLine (epochs: string[], first: string): string {
  assert.equal(epochs[0], first)
  const runs = epochs.filter((e, i) => i === 0 || e !== epochs[i - 1])
  assert.ok(runs.length <= 2, `at most one change of epoch, in line: ${runs.join(' -> ')}`)
  return runs[runs.length - 1]
}

test('Redis crash with AOF: outage publishes fail with 503, then every acknowledged event arrives exactly once', { skip }, async (t) => {
  const redis = await startRedis(t, { aof: true })
  // This node reaches Redis through a relay (a plain TCP pipe) so that the test can decide when it gets back.
  const relay = await gatedRelay(t, redis.port)
  // Its bus is the one the config would build, but with a command timeout of ten minutes instead of 5 s: a
  // publish that waited for Redis (queued) instead of failing fast could then not be answered while Redis is
  // down, so an answer during the outage proves it failed fast — no clock involved.
  const defaults = defaultConfig()
  const broker = new RedisBroker({
    history: defaults.history,
    idempotencyTtlSeconds: defaults.idempotencyTtlSeconds,
    url: relay.url,
    prefix: 'herald-test',
    log: pino({ level: 'silent' }),
    commandTimeoutMs: 10 * 60_000
  })
  await broker.connect()
  const { url, wsUrl } = await startHerald(t, { redisUrl: relay.url, options: { broker } })
  t.after(async () => { await broker.close() }) // after the node (hooks run in order): the caller owns a given bus
  const ch = 'orders:aof'
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  const resub = autoResubscribe(ws, ch)
  const sub = await ws.subscribe(ch)
  assert.equal(sub.offset, 0)
  const sse = await ResumingSse.open(t, url, [ch])
  await sse.current.waitFor((m) => m.data.type === 'subscribed')

  const acked: Array<{ offset: number, epoch: string, n: number }> = []
  let n = 0
  const attempt = async (): Promise<{ status: number, body: any }> => {
    const i = ++n
    const res = await publish(url, ch, { n: i })
    if (res.status === 201) acked.push({ offset: res.body.offset, epoch: res.body.epoch, n: i })
    return res
  }

  for (let i = 1; i <= 3; i++) {
    const res = await attempt()
    assert.equal(res.status, 201)
    assert.equal(res.body.offset, i)
  }
  const epoch = acked[0].epoch
  await ws.events(ch, 3)
  await sse.current.waitEvents(ch, 3)
  assert.equal((await readyz(url)).status, 200)

  // ---- crash
  await redis.stop('SIGKILL')
  await until(async () => (await readyz(url)).status === 503, 'readyz to fail while Redis is down', RECOVERY_MS)
  const down = await readyz(url)
  assert.equal(down.body.code, 'HERALD_ERR_BUS_UNAVAILABLE')
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${url}/v1/channels/${ch}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token()}` },
      body: JSON.stringify({ data: { n: ++n } }),
      signal: AbortSignal.timeout(30_000) // a failure bound, far below the bus's ten-minute command timeout
    })
    const body = await res.json() as any
    assert.equal(res.status, 503, 'a publish during the outage is never acknowledged')
    assert.equal(body.code, 'HERALD_ERR_BUS_UNAVAILABLE')
    assert.equal(body.statusCode, 503)
    assert.equal(res.headers.get('retry-after'), '1')
  }
  // The same over the WebSocket: an error frame, not an ack.
  const from = ws.frames.length
  ws.send({ type: 'publish', channel: ch, data: { n: ++n }, id: 'during-outage' })
  const wsErr = await ws.waitFor((f) => f.id === 'during-outage', 30_000, from)
  assert.equal(wsErr.type, 'error')
  assert.equal(wsErr.code, 'HERALD_ERR_BUS_UNAVAILABLE')
  assert.equal(ws.closed, null, 'the WebSocket stays open through the outage')
  // Fails fast instead of queueing: those answers came while Redis was still down (it is, still), so they did
  // not wait for it to come back, nor for a command timeout (ten minutes here).
  assert.notEqual(redis.proc.signalCode, null, 'redis-server is still the killed process')
  assert.notEqual(spawnSync('redis-cli', ['-p', String(redis.port), 'ping'], { encoding: 'utf8' }).stdout.trim(), 'PONG', 'Redis is still down')

  // ---- restart: same directory, the AOF is reloaded. This node is held back (relay gate shut) while another
  // node publishes: those events' pub/sub messages never reach this node, so its subscribers can only get them
  // through the hub's catch-up from history when the bus reconnects.
  relay.open = false
  await redis.restart()
  const other = await startHerald(t, { redisUrl: redis.url })
  for (let i = 0; i < 3; i++) {
    const i2 = ++n
    const res = await publish(other.url, ch, { n: i2 })
    assert.equal(res.status, 201, 'the other node publishes')
    acked.push({ offset: res.body.offset, epoch: res.body.epoch, n: i2 })
  }
  assert.deepEqual(acked.map((a) => a.offset), [1, 2, 3, 4, 5, 6], 'the AOF kept the counter')
  assert.equal((await readyz(url)).status, 503, 'this node is still cut off')
  assert.equal((await publish(url, ch, { n: 'cut-off' })).status, 503)
  relay.open = true
  // Without any further publish (which would reveal the gap), the reconnect alone brings them to this node's subscribers.
  await until(() => ws.frames.some((f) => f.type === 'event' && f.channel === ch && f.offset === 6), 'WS catch-up of the other node\'s events after the reconnect', RECOVERY_MS)
  await until(() => sse.events(ch).some((e) => e.offset === 6), 'SSE catch-up of the other node\'s events after the reconnect', RECOVERY_MS)
  // This node: publish, retrying any 503 while its command connection is still reconnecting.
  const deadline = Date.now() + RECOVERY_MS
  let retried = 0
  while (acked.length < 9) {
    const res = await attempt()
    if (res.status !== 201) {
      assert.equal(res.status, 503, 'while reconnecting a publish is acknowledged or refused, nothing else')
      assert.equal(res.body.code, 'HERALD_ERR_BUS_UNAVAILABLE')
      assert.ok(Date.now() < deadline, 'publishing did not recover within the deadline')
      retried++
      await sleep(50)
    }
  }
  await until(async () => (await readyz(url)).status === 200, 'readyz to recover', RECOVERY_MS)
  for (let i = 0; i < 2; i++) assert.equal((await attempt()).status, 201)
  t.diagnostic(`503s while this node's command connection reconnected: ${retried}`)

  assert.deepEqual(acked.map((a) => a.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'the AOF kept the counter: offsets continue after the crash')
  // A restarted Redis may hold less than it acknowledged (not with appendfsync always, but Herald cannot tell):
  // the epoch goes on under a new name from the offset the AOF kept, and every resume still recovers (below).
  const later = epochsInLine(acked.map((a) => a.epoch), epoch)
  const top = acked[acked.length - 1].offset

  await until(() => ws.frames.some((f) => f.type === 'event' && f.channel === ch && f.offset === top), `WS delivery up to offset ${top}`, RECOVERY_MS)
  await until(() => sse.events(ch).some((e) => e.offset === top), `SSE delivery up to offset ${top}`, RECOVERY_MS)
  // One more publish as a barrier: a duplicate of anything earlier would have arrived before it.
  const probe = await publish(url, ch, { n: ++n })
  assert.equal(probe.status, 201)
  acked.push({ offset: probe.body.offset, epoch: probe.body.epoch, n })
  await until(() => ws.frames.some((f) => f.type === 'event' && f.offset === probe.body.offset), 'probe on WS', RECOVERY_MS)
  await until(() => sse.events(ch).some((e) => e.offset === probe.body.offset), 'probe on SSE', RECOVERY_MS)

  const wsEvents = ws.frames.filter((f) => f.type === 'event' && f.channel === ch)
  assertExactlyOnce('WebSocket', wsEvents, acked)
  for (const s of resub.resubscribed) assert.equal(s.recovered, true, 'a resubscription after the crash recovered every event')
  const sseEvents = sse.events(ch)
  assertExactlyOnce('SSE', sseEvents, acked)
  for (const f of sse.frames()) if (f.type === 'subscribed' && f.recovered !== undefined) assert.equal(f.recovered, true)
  t.diagnostic(`WS resubscriptions: ${resub.resubscribed.length}; SSE streams: ${sse.segments.length}`)

  // History agrees with what was delivered.
  const hist = await (await fetch(`${url}/v1/channels/${ch}/events?since=0&limit=100`, { headers: { authorization: `Bearer ${token()}` } })).json() as any
  assert.equal(hist.offset, probe.body.offset)
  assert.equal(hist.epoch, later)
  assert.deepEqual(hist.events.map((e: Frame) => e.epoch), wsEvents.map((e) => e.epoch))
  assert.deepEqual(hist.events.map((e: Frame) => e.offset), wsEvents.map((e) => e.offset))
})

test('Redis crash without persistence: the new epoch is announced, resume says recovered:false (WS and SSE)', { skip }, async (t) => {
  const redis = await startRedis(t)
  const { url, wsUrl } = await startHerald(t, { redisUrl: redis.url })
  const ch = 'room:volatile'
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  await ws.subscribe(ch)
  // The SSE stream also follows a channel nobody publishes to: it loses its epoch all the same.
  const quiet = 'room:quiet'
  const sse = await SseClient.open(url, [ch, quiet])
  t.after(() => sse.close())
  await until(() => sse.messages.filter((m) => m.data.type === 'subscribed').length === 2, 'SSE subscribed to both channels', RECOVERY_MS)
  const quietEpoch = sse.messages.find((m) => m.data.type === 'subscribed' && m.data.channel === quiet)!.data.epoch as string
  const es = stockEventSource(t, url, ch)
  await until(() => es.messages.some((m) => m.data.type === 'subscribed'), 'EventSource subscribed', RECOVERY_MS)

  let e1 = ''
  for (let i = 1; i <= 3; i++) {
    const res = await publish(url, ch, { n: i })
    assert.equal(res.status, 201)
    assert.equal(res.body.offset, i)
    e1 = res.body.epoch
  }
  await ws.events(ch, 3)
  await sse.waitEvents(ch, 3)
  await until(() => es.messages.filter((m) => m.data.type === 'event').length === 3, 'EventSource events', RECOVERY_MS)
  const lastEventId = sse.lastEventId
  assert.ok(lastEventId !== undefined)
  assert.deepEqual(decodeCursor(lastEventId, [ch, quiet]).get(ch), { offset: 3, epoch: e1 })
  assert.deepEqual(decodeCursor(lastEventId, [ch, quiet]).get(quiet), { offset: 0, epoch: quietEpoch })

  await redis.stop('SIGKILL')
  await until(async () => (await readyz(url)).status === 503, 'readyz to fail while Redis is down', RECOVERY_MS)
  const res503 = await publish(url, ch, { n: 'lost' })
  assert.equal(res503.status, 503)
  assert.equal(res503.body.code, 'HERALD_ERR_BUS_UNAVAILABLE')
  await redis.restart() // empty: no AOF, no RDB

  // The live WebSocket subscriber is told it lost its place.
  const wsFrom = ws.frames.findIndex((f) => f.type === 'event' && f.offset === 3) + 1
  const lost = await ws.waitFor((f) => f.type === 'unsubscribed' && f.channel === ch, RECOVERY_MS, wsFrom)
  assert.equal(lost.reason, 'insufficient_state: epoch_changed')
  assert.equal(lost.resubscribe, true)
  assert.equal(ws.closed, null, 'the WebSocket itself stays open')
  // Nothing of the channel slipped through in between (no silent switch of epoch).
  const lostAt = ws.frames.indexOf(lost)
  assert.deepEqual(ws.frames.slice(wsFrom, lostAt).filter((f) => f.channel === ch), [])

  // The SSE stream gets the same frame and ends.
  const sseLost = await sse.waitFor((m) => m.data.type === 'unsubscribed', RECOVERY_MS)
  assert.ok([ch, quiet].includes(sseLost.data.channel), 'one of its channels was lost')
  assert.equal(sseLost.data.reason, 'insufficient_state: epoch_changed')
  assert.equal(sseLost.data.resubscribe, true)
  await until(() => sse.ended, 'the SSE stream to end', RECOVERY_MS)
  const bye = sse.messages.at(-1)!.data
  assert.equal(bye.type, 'disconnect')
  assert.equal(bye.code, CloseCodes.INSUFFICIENT_STATE)
  assert.equal(bye.reconnect, true)
  assert.deepEqual(sse.events(ch).map((e) => e.offset), [1, 2, 3], 'no event after the loss on the old stream')
  assert.equal(sse.lastEventId, lastEventId, 'the loss does not move the resume position')

  await until(async () => (await readyz(url)).status === 200, 'readyz to recover', RECOVERY_MS)

  // Resuming from the last position is answered honestly.
  const re = await ws.subscribe(ch, { offset: 3, epoch: e1 })
  assert.equal(re.recovered, false)
  assert.equal(re.reason, 'epoch_changed')
  assert.notEqual(re.epoch, e1)
  assert.equal(re.offset, 0, 'continues from the top of the new (empty) stream')
  assert.equal(re.epoch, EMPTY_EPOCH, 'the empty position: the next publish starts the stream')
  assert.equal(re.replayed, 0)

  const sse2 = await SseClient.open(url, [ch, quiet], { lastEventId })
  t.after(() => sse2.close())
  await until(() => sse2.messages.filter((m) => m.data.type === 'subscribed').length === 2, 'SSE resubscribed to both channels', RECOVERY_MS)
  const s2 = sse2.messages.find((m) => m.data.type === 'subscribed' && m.data.channel === ch)!
  const q2 = sse2.messages.find((m) => m.data.type === 'subscribed' && m.data.channel === quiet)!
  // The quiet channel never had a stream, so Redis lost nothing of it: it resumes, still at the empty position.
  assert.equal(quietEpoch, EMPTY_EPOCH)
  assert.equal(q2.data.recovered, true)
  assert.equal(q2.data.epoch, EMPTY_EPOCH)
  assert.equal(s2.data.recovered, false)
  assert.equal(s2.data.reason, 'epoch_changed')
  assert.equal(s2.data.epoch, EMPTY_EPOCH)
  assert.equal(s2.data.offset, 0)
  assert.deepEqual(decodeCursor(sse2.lastEventId!, [ch, quiet]).get(ch), { offset: 0, epoch: EMPTY_EPOCH }, 'the new id points past the old epoch')
  assert.deepEqual(decodeCursor(sse2.lastEventId!, [ch, quiet]).get(quiet), { offset: 0, epoch: q2.data.epoch })

  // The stock EventSource reconnected by itself with its last id and was told the same.
  const esLostAt = await (async () => { await until(() => es.messages.some((m) => m.data.type === 'unsubscribed'), 'EventSource told', RECOVERY_MS); return es.messages.findIndex((m) => m.data.type === 'unsubscribed') })()
  await until(() => es.messages.slice(esLostAt).some((m) => m.data.type === 'subscribed'), 'EventSource resubscribed by itself', RECOVERY_MS)
  const esSub = es.messages.slice(esLostAt).find((m) => m.data.type === 'subscribed')!
  assert.equal(esSub.data.recovered, false)
  assert.equal(esSub.data.reason, 'epoch_changed')
  assert.equal(esSub.data.epoch, EMPTY_EPOCH)
  assert.equal(es.sentLastEventIds.length >= 2, true)
  assert.deepEqual(decodeCursor(es.sentLastEventIds[es.sentLastEventIds.length - 1]!, [ch]).get(ch), { offset: 3, epoch: e1 }, 'it resumed from its last event')

  // Live delivery continues in the new epoch everywhere.
  let e2 = ''
  for (let i = 1; i <= 2; i++) {
    const res = await publish(url, ch, { n: 100 + i })
    assert.equal(res.status, 201)
    assert.equal(res.body.offset, i)
    e2 ||= res.body.epoch
    assert.equal(res.body.epoch, e2)
  }
  assert.notEqual(e2, e1)
  await until(() => ws.frames.filter((f) => f.type === 'event' && f.channel === ch).length >= 5, 'WS events in the new epoch', RECOVERY_MS)
  assert.deepEqual(ws.frames.filter((f) => f.type === 'event' && f.channel === ch).map((e) => [e.offset, e.epoch, e.data.n]),
    [[1, e1, 1], [2, e1, 2], [3, e1, 3], [1, e2, 101], [2, e2, 102]])
  const sse2Events = await sse2.waitEvents(ch, 2)
  assert.deepEqual(sse2Events.map((e) => [e.offset, e.epoch, e.data.n]), [[1, e2, 101], [2, e2, 102]])
  await until(() => es.messages.filter((m) => m.data.type === 'event').length >= 5, 'EventSource events in the new epoch', RECOVERY_MS)
  assert.deepEqual(es.messages.filter((m) => m.data.type === 'event').map((m) => [m.data.offset, m.data.epoch, m.data.data.n]),
    [[1, e1, 1], [2, e1, 2], [3, e1, 3], [1, e2, 101], [2, e2, 102]])
})

test('Redis crash with AOF under continuous publishing: publishers retrying with their idempotency key store each message exactly once', { skip }, async (t) => {
  const redis = await startRedis(t, { aof: true })
  const { url, wsUrl } = await startHerald(t, { redisUrl: redis.url })
  const ch = 'stream:busy'
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  autoResubscribe(ws, ch)
  await ws.subscribe(ch)

  // Each publisher sends its messages in turn; a 503 is retried with the same id until it is acknowledged.
  const results = new Map<string, { offset: number, epoch: string, attempts: number, duplicate: boolean }>()
  let stop = false
  let refused = 0
  const publisher = async (name: string): Promise<void> => {
    for (let i = 0; !stop; i++) {
      const id = `${name}-${i}`
      let attempts = 0
      const deadline = Date.now() + RECOVERY_MS
      for (;;) {
        attempts++
        const res = await publish(url, ch, { id }, { id })
        if (res.status === 201) {
          results.set(id, { offset: res.body.offset, epoch: res.body.epoch, attempts, duplicate: res.body.duplicate })
          break
        }
        assert.equal(res.status, 503, `publish ${id}: ${JSON.stringify(res.body)}`)
        assert.equal(res.body.code, 'HERALD_ERR_BUS_UNAVAILABLE')
        refused++
        assert.ok(Date.now() < deadline, `publish ${id} not acknowledged within ${RECOVERY_MS} ms`)
        await sleep(20)
      }
    }
  }
  const running = Promise.all(['p', 'q', 'r'].map(publisher))
  await until(() => results.size >= 20, 'publishes before the crash', 5000)
  await redis.stop('SIGKILL')
  // Down until the publishers have run into it (a refused attempt), rather than for a fixed while.
  await until(() => refused > 0, 'a publish refused during the outage', RECOVERY_MS)
  await redis.restart()
  const afterRestart = results.size
  await until(() => results.size >= afterRestart + 20, 'publishes after the restart', RECOVERY_MS)
  stop = true
  await running
  assert.ok(refused > 0, 'some publishes were refused during the outage')

  const acked = [...results.entries()]
  const top = Math.max(...acked.map(([, r]) => r.offset))
  await until(() => ws.frames.some((f) => f.type === 'event' && f.channel === ch && f.offset === top), `WS delivery up to ${top}`, RECOVERY_MS)
  const events = ws.frames.filter((f) => f.type === 'event' && f.channel === ch)
  t.diagnostic(`acknowledged ${acked.length} messages (${refused} refused attempts, ${acked.filter(([, r]) => r.duplicate).length} acknowledged as duplicates); delivered ${events.length}`)

  // No gap, no duplicate offset; the epoch went on under a new name after the restart, from the offset the AOF kept.
  assert.deepEqual(events.map((e) => e.offset), Array.from({ length: events.length }, (_, i) => i + 1))
  epochsInLine(events.map((e) => e.epoch), events[0].epoch)
  // Every message exactly once, at the offset its publisher was given.
  const ids = events.map((e) => e.data.id as string)
  assert.equal(new Set(ids).size, ids.length, 'no message stored twice despite the retries')
  for (const [id, r] of acked) {
    const got = events.filter((e) => e.data.id === id)
    assert.equal(got.length, 1, `${id} delivered once`)
    assert.equal(got[0].offset, r.offset, `${id} delivered at the acknowledged offset`)
    assert.equal(got[0].epoch, r.epoch)
  }
  // Publishers only move on (or stop) after an ack, so every stored message was acknowledged: nothing extra.
  assert.equal(ids.length, acked.length, 'every delivered message was acknowledged')
  // History (what a reconnecting client would replay) agrees.
  const hist = await (await fetch(`${url}/v1/channels/${ch}/events?since=0&limit=1000`, { headers: { authorization: `Bearer ${token()}` } })).json() as any
  assert.deepEqual(hist.events.map((e: Frame) => [e.offset, e.data.id]), events.map((e) => [e.offset, e.data.id]))
})

test('presence survives Redis coming back empty: connected members are put back by their node, not lost until they reconnect', { skip }, async (t) => {
  const redis = await startRedis(t)
  const { url, wsUrl } = await startHerald(t, {
    redisUrl: redis.url,
    config: { namespaces: { namespaces: { room: { presence: true } } }, presence: { ttlSeconds: 3, batchMs: 50 } }
  })
  const alice = await WsClient.connect(wsUrl, { token: token({ sub: 'alice' }) })
  t.after(() => alice.close())
  await alice.subscribe('room:1')
  const members = async (): Promise<string[]> => {
    const res = await fetch(`${url}/v1/channels/room:1/presence`, { headers: { authorization: `Bearer ${token({ sub: 'observer' })}` } })
    return res.status === 200 ? ((await res.json()) as { members: Array<{ sub: string }> }).members.map((m) => m.sub) : []
  }
  assert.deepEqual(await members(), ['alice'])
  await redis.restart() // no persistence: every presence entry is gone
  await until(async () => (await readyz(url)).status === 200, 'the node is back on Redis', RECOVERY_MS)
  // The node refreshes its own members every PRESENCE_TTL / 3 and puts back the ones Redis lost.
  await until(async () => (await members()).includes('alice'), 'alice is a member again, without reconnecting', RECOVERY_MS)
  assert.equal(alice.closed, null)
})

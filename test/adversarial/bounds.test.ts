import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import WebSocket from 'ws'
import type { Broker, HistoryRequest } from '../../src/bus/broker.js'
import type { MemoryBroker } from '../../src/bus/broker-memory.js'
import { REPLAY_PAGE, REPLAY_PAGE_BYTES } from '../../src/hub/replay.js'
import { poll, publish, redisSkipReason, SseClient, startHerald, startRedis, token, until, WsClient, type TestApp } from '../helper.js'

// What client input can make a node (or its Redis) hold, pushed on: reads of made-up channels, replays from far
// back by clients that do not read, long-polls from old cursors, and history as a whole.

const MiB = 1024 * 1024
const fresh = (): string => 'fresh:' + randomBytes(6).toString('hex')
const manyRequests = { limits: { restMax: 1_000_000, wsRate: 10_000, wsBurst: 10_000 }, maxSubscriptions: 128, pollLingerSeconds: 0 }

/** Reads made-up channels every way a client can: REST history, WebSocket subscribe/unsubscribe, SSE, long-poll. */
async function readFreshNames (h: TestApp, rounds: number): Promise<void> {
  const auth = { authorization: `Bearer ${token()}` }
  const ws = await WsClient.connect(h.wsUrl)
  for (let r = 0; r < rounds; r++) {
    const names = Array.from({ length: 100 }, fresh)
    await Promise.all(names.slice(0, 50).map(async (ch) => {
      const res = await fetch(`${h.url}/v1/channels/${ch}/events?since=0`, { headers: auth })
      assert.equal(res.status, 200)
      assert.equal((await res.json() as { epoch: string }).epoch, '0')
    }))
    for (const ch of names.slice(50, 70)) {
      await ws.subscribe(ch)
      ws.send({ type: 'unsubscribe', channel: ch, id: 'u-' + ch })
      await ws.waitFor((f) => f.id === 'u-' + ch)
    }
    const sse = await SseClient.open(h.url, names.slice(70, 90))
    await sse.waitFor(() => sse.messages.filter((m) => m.data.type === 'subscribed').length === 20)
    sse.close()
    assert.equal((await poll(h.url, names.slice(90), { timeout: 0 })).status, 200)
  }
  ws.close()
  await until(() => h.app.herald.connections.count() === 0 && h.app.herald.hub.channelCount === 0, 'every connection and channel is gone')
}

test('reads of made-up channel names leave nothing behind on the in-process bus', async (t) => {
  const h = await startHerald(t, { config: manyRequests })
  const broker = h.app.herald.broker as MemoryBroker
  await readFreshNames(h, 10)
  assert.equal((broker as unknown as { streams: Map<string, unknown> }).streams.size, 0, 'no stream was created by reading')
  assert.equal(broker.historyBytes, 0)
})

test('reads of made-up channel names leave no key in Redis', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const h = await startHerald(t, { redisUrl: redis.url, config: manyRequests })
  assert.equal((await publish(h.url, 'real:one', { n: 1 })).status, 201)
  const dbsize = (): number => Number(spawnSync('redis-cli', ['-p', String(redis.port), 'DBSIZE'], { encoding: 'utf8' }).stdout.trim())
  const before = dbsize()
  await readFreshNames(h, 10)
  assert.equal(dbsize(), before, '1,000 reads of made-up names, and not one key more')
})

test('a client resuming from far back and not reading is fed one page at a time, only as its buffer drains', async (t) => {
  const maxBufferBytes = 256 * 1024
  const h = await startHerald(t, { config: { maxBufferBytes, history: { size: 20_000 }, limits: { restMax: 1_000_000 } } })
  const broker = h.app.herald.broker
  const ch = 'far:back'
  const pad = 'p'.repeat(2000)
  let epoch = ''
  for (let i = 1; i <= 12_000; i++) epoch = (await broker.publish({ channel: ch, data: { i, pad }, historySize: 20_000 })).epoch

  // Every page read for the replay: its size, and what the node already held for the client at that moment.
  const reads: Array<{ limit: number, maxBytes?: number, held: number }> = []
  const history = broker.history.bind(broker)
  ;(broker as Broker).history = async (channel: string, req: HistoryRequest) => {
    if (channel === ch && req.limit > 0) {
      const session = [...(h.app.herald.connections as unknown as { all: Set<{ buffered: () => number }> }).all][0]
      reads.push({ limit: req.limit, maxBytes: req.maxBytes, held: session?.buffered() ?? 0 })
    }
    return await history(channel, req)
  }

  const socket = new WebSocket(`${h.wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${token()}` } })
  t.after(() => socket.terminate())
  const offsets: number[] = []
  let subscribed = false
  socket.on('message', (data) => {
    const f = JSON.parse(data.toString()) as { type: string, offset?: number }
    if (f.type === 'subscribed') subscribed = true
    if (f.type === 'event') offsets.push(f.offset!)
  })
  await new Promise((resolve) => socket.once('open', resolve))
  socket.send(JSON.stringify({ type: 'subscribe', channel: ch, since: { offset: 0, epoch } }))
  await until(() => subscribed, 'subscribed')
  ;(socket as unknown as { _socket: { pause: () => void } })._socket.pause()
  // Whatever the kernel takes, the node keeps feeding only as the client's buffer drains below half the bound.
  await until(() => reads.length >= 2, 'a second page was read')
  socket.once('close', () => {})
  ;(socket as unknown as { _socket: { resume: () => void } })._socket.resume()
  await until(() => offsets.length >= 12_000, 'every event once the client reads again', 30_000)

  assert.deepEqual(offsets, Array.from({ length: 12_000 }, (_, i) => i + 1), 'each once, in order')
  assert.ok(reads.length >= 12, `the replay came in pages (${reads.length} reads)`)
  for (const r of reads) {
    assert.ok(r.limit <= REPLAY_PAGE, `a page of at most ${REPLAY_PAGE} events (${r.limit})`)
    assert.equal(r.maxBytes, REPLAY_PAGE_BYTES)
    assert.ok(r.held <= maxBufferBytes / 2, `a page was read only when the client held at most half its bound (held ${r.held})`)
  }
})

test('a long-poll from an old cursor reads one page for its answer, not the whole history', async (t) => {
  const h = await startHerald(t, { config: { history: { size: 20_000 }, pollLingerSeconds: 0, limits: { restMax: 1_000_000 } } })
  const broker = h.app.herald.broker
  const ch = 'poll:back'
  let epoch = ''
  for (let i = 1; i <= 5000; i++) epoch = (await broker.publish({ channel: ch, data: { i }, historySize: 20_000 })).epoch
  let read = 0
  const history = broker.history.bind(broker)
  ;(broker as Broker).history = async (channel: string, req: HistoryRequest) => {
    const result = await history(channel, req)
    if (channel === ch) read += result.publications.length
    return result
  }
  const { encodeCursor } = await import('../../src/protocol/cursor.js')
  const answer = await poll(h.url, [ch], { cursor: encodeCursor(new Map([[ch, { offset: 0, epoch }]])), timeout: 5 })
  assert.equal(answer.status, 200)
  assert.equal(answer.body.events.length, 1000)
  assert.ok(read <= 2 * REPLAY_PAGE, `read ${read} events from history for an answer of 1,000`)
})

test('in-process history as a whole stays within HISTORY_MAX_BYTES; a resume into what was shed is told history_trimmed', async (t) => {
  const h = await startHerald(t, { config: { history: { size: 10_000, maxBytes: MiB }, limits: { restMax: 1_000_000 } } })
  const broker = h.app.herald.broker as MemoryBroker
  const pad = 'x'.repeat(1000)
  const first = await broker.publish({ channel: 'shed:old', data: { pad } })
  for (let c = 0; c < 40; c++) for (let i = 0; i < 60; i++) await broker.publish({ channel: 'shed:' + c, data: { i, pad } })
  assert.ok(broker.historyBytes <= MiB, `${broker.historyBytes} bytes of history`)
  const ws = await WsClient.connect(h.wsUrl)
  const sub = await ws.subscribe('shed:old', { offset: 0, epoch: first.epoch })
  assert.equal(sub.recovered, false)
  assert.equal(sub.reason, 'history_trimmed')
})

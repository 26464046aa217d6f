import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { entryArgs, startHerald, startRedis, redisSkipReason, freePort, publish, poll, token, until, sleep, SECRET, WsClient, SseClient, type Frame } from './helper.js'
import { withTimeout } from './support/process.js'

/**
 * Graceful drain, in-process (`app.herald.drain()`) and as a real process (SIGTERM to src/server.ts on Redis):
 * clients are told to go elsewhere, new ones are refused, and no acknowledged publish is lost.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url))

async function tryWs (wsUrl: string): Promise<{ status: number, body?: any }> {
  try {
    const ws = await WsClient.connect(wsUrl)
    ws.close()
    return { status: 101 }
  } catch (err) {
    const e = err as { status?: number, body?: any }
    if (e.status === undefined) throw err
    return { status: e.status, body: e.body }
  }
}

test('drain(): WebSocket closed 1012, SSE told 1012 and ended, waiting long-poll answered at once, readyz 503, new connections refused 503', async (t) => {
  const { app, url, wsUrl } = await startHerald(t)
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  await ws.subscribe('drain:1')
  const sse = await SseClient.open(url, ['drain:1'])
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')
  const first = await poll(url, ['drain:1'], { timeout: 0 })
  assert.equal(first.status, 200)
  assert.equal((await publish(url, 'drain:1', { n: 1 })).status, 201)
  await ws.events('drain:1', 1)
  await sse.waitEvents('drain:1', 1)
  // A long-poll from after that event: it waits (up to 25 s).
  const afterFirst = await poll(url, ['drain:1'], { cursor: first.body.cursor, timeout: 0 })
  assert.equal(afterFirst.body.events.length, 1)
  const waiting = poll(url, ['drain:1'], { cursor: afterFirst.body.cursor, timeout: 25 })
  await until(() => app.herald.connections.count('long-poll') === 1, 'the long-poll is waiting')
  assert.equal((await fetch(`${url}/readyz`)).status, 200)

  app.herald.drain()
  // Answered by the drain itself, not after its 25 s timeout: the waiting poll is settled (no longer a
  // connection) when drain() returns, and no timer can fire within that synchronous call.
  assert.equal(app.herald.connections.count('long-poll'), 0, 'drain() answered the waiting long-poll')
  app.herald.drain() // idempotent

  const closed = await ws.waitClosed(10_000)
  assert.equal(closed.code, 1012)
  const disconnect = await sse.waitFor((m) => m.data.type === 'disconnect', 10_000)
  assert.deepEqual([disconnect.data.code, disconnect.data.reconnect], [1012, true])
  await until(() => sse.ended, 'the SSE stream ends', 10_000)
  assert.equal(sse.messages[sse.messages.length - 1].data.type, 'disconnect')

  const polled = await withTimeout(waiting, 15_000, 'the answer to the long-poll the drain settled')
  assert.equal(polled.status, 200)
  assert.deepEqual(polled.body.events, [])
  assert.equal(typeof polled.body.cursor, 'string', 'a cursor to continue from on another node')
  assert.equal(app.herald.connections.count(), 0)

  const ready = await fetch(`${url}/readyz`)
  assert.equal(ready.status, 503)
  assert.equal(((await ready.json()) as { code: string }).code, 'HERALD_ERR_DRAINING')
  assert.equal((await fetch(`${url}/healthz`)).status, 200, 'still alive, just not ready')

  const refusedWs = await tryWs(wsUrl)
  assert.equal(refusedWs.status, 503, 'a new WebSocket upgrade is refused')
  assert.equal(refusedWs.body.code, 'HERALD_ERR_DRAINING')
  await assert.rejects(SseClient.open(url, ['drain:1']), (err: { status?: number, body?: { code: string } }) => err.status === 503 && err.body?.code === 'HERALD_ERR_DRAINING')
  const refusedPoll = await poll(url, ['drain:1'], { cursor: polled.body.cursor, timeout: 5 })
  assert.equal(refusedPoll.status, 503)
  assert.equal(refusedPoll.body.code, 'HERALD_ERR_DRAINING')
  assert.equal(app.herald.connections.count(), 0)
})

interface Attempt { seq: number, status: number | 'error', body?: any, error?: string }

test('SIGTERM to the standalone server on Redis mid-stream: every acknowledged publish is in history, the WebSocket gets 1012, exit 0 in time', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const drainTimeout = 3
  const env: Record<string, string> = {
    PORT: String(port),
    HOST: '127.0.0.1',
    JWT_SECRET: SECRET,
    REDIS_URL: redis.url,
    REDIS_PREFIX: 'herald-test',
    DRAIN_TIMEOUT: String(drainTimeout),
    LOG_LEVEL: 'warn'
  }
  for (const key of ['PATH', 'HOME', 'TMPDIR']) if (process.env[key] !== undefined) env[key] = process.env[key]!
  const child = spawn(process.execPath, entryArgs('src/server.ts'), { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { output += d.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null, at: number }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }))
  })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })

  // Start-up (tsx compiles on the fly; allow for a loaded machine).
  await until(async () => {
    if (child.exitCode !== null) throw new Error('server exited during start-up: ' + output)
    try { return (await fetch(`${base}/readyz`)).status === 200 } catch { return false }
  }, 'the standalone server is ready', 30_000)

  const channel = 'drain:proc'
  const ws = await WsClient.connect(`ws://127.0.0.1:${port}`)
  t.after(() => ws.close())
  await ws.subscribe(channel)

  // Two publishers, each with its own ids, publishing until the process is gone.
  const attempts: Attempt[] = []
  let seq = 0
  let stop = false
  t.after(() => { stop = true }) // publishers never outlive the test, even when it fails early
  const tok = token({ sub: 'publisher' })
  async function publisher (): Promise<void> {
    while (!stop) {
      const n = ++seq
      try {
        const res = await publish(base, channel, { seq: n }, { id: `pub-${n}`, token: tok })
        attempts.push({ seq: n, status: res.status, body: res.body })
      } catch (err) {
        attempts.push({ seq: n, status: 'error', error: (err as Error).message })
        await sleep(20)
      }
    }
  }
  const publishers = [publisher(), publisher()]
  await until(() => attempts.filter((a) => a.status === 201).length >= 40, '40 publishes acknowledged before SIGTERM', 15_000)
  await until(() => ws.frames.filter((f) => f.type === 'event').length >= 20, 'the WebSocket receives the stream', 5000)

  const sentAt = Date.now()
  process.kill(child.pid!, 'SIGTERM')
  const closed = await ws.waitClosed(10_000)
  assert.equal(closed.code, 1012, 'the WebSocket is told the node is restarting')

  // "In time" is shown by the exit code, not the clock: close-with-grace ends a shutdown that outlasts its delay
  // (DRAIN_TIMEOUT + 1 s) with exit code 1, so exit 0 means the drain finished within it. The wait below only
  // bounds a hang.
  const exit = await withTimeout(exited, (drainTimeout + 1) * 1000 + 20_000, 'the process to exit after SIGTERM')
    .catch((err: Error) => { throw new Error(`${err.message}; output:\n${output}`) })
    .finally(() => { stop = true })
  await Promise.all(publishers)
  assert.equal(exit.signal, null)
  assert.equal(exit.code, 0, `exit code (1 = killed by the drain timeout); output:\n${output}`)

  // What the publishers saw: acknowledgements, refusals at the door, or a closed port. Never a publish that
  // started and then failed inside (bus closed under it, internal error).
  const acked = attempts.filter((a) => a.status === 201)
  const other = attempts.filter((a) => a.status !== 201)
  for (const a of other) {
    if (a.status === 'error') continue
    assert.equal(a.status, 503, `unexpected answer during the drain: ${JSON.stringify(a)}`)
    assert.ok(a.body?.code === undefined || a.body.code === 'HERALD_ERR_DRAINING', `a publish failed inside the server during the drain: ${JSON.stringify(a)}`)
  }
  assert.ok(acked.length >= 40)
  t.diagnostic(`publishes: ${acked.length} acknowledged, ${other.filter((a) => a.status === 503).length} refused with 503, ${other.filter((a) => a.status === 'error').length} failed to connect; exit ${exit.at - sentAt} ms after SIGTERM`)

  // Every acknowledged publish is in Redis history, at the offset it was acknowledged with, exactly once.
  const reader = await startHerald(t, { redisUrl: redis.url })
  const res = await fetch(`${reader.url}/v1/channels/${channel}/events?since=0&limit=1000`, { headers: { authorization: `Bearer ${token()}` } })
  assert.equal(res.status, 200)
  const history = await res.json() as { offset: number, truncated: boolean, events: Frame[] }
  assert.equal(history.truncated, false)
  const bySeq = new Map<number, Frame>()
  for (const e of history.events) {
    assert.ok(!bySeq.has(e.data.seq), `seq ${e.data.seq as number} stored twice`)
    bySeq.set(e.data.seq, e)
  }
  assert.deepEqual(history.events.map((e) => e.offset), Array.from({ length: history.events.length }, (_, i) => i + 1), 'offsets 1..n without a gap')
  for (const a of acked) {
    const stored = bySeq.get(a.seq)
    assert.ok(stored !== undefined, `publish ${a.seq} was acknowledged (offset ${a.body.offset as number}) but is not in history`)
    assert.equal(stored.offset, a.body.offset)
    assert.equal(stored.epoch, a.body.epoch)
  }

  // The WebSocket saw a prefix of that history, in order, once each.
  const seen = ws.frames.filter((f) => f.type === 'event')
  assert.deepEqual(seen.map((e) => e.offset), Array.from({ length: seen.length }, (_, i) => i + 1))
  for (const e of seen) assert.equal(bySeq.get(e.data.seq)?.offset, e.offset)
  // Nothing listens any more.
  await assert.rejects(fetch(`${base}/healthz`))
})

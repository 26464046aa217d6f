/**
 * WORKERS=N (src/workers.ts): N Herald nodes on one port, supervised by a primary — and signals that reach Herald
 * however it is started (`npm start` included). Real processes, a real Redis.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { get, type ClientRequest } from 'node:http'
import { join } from 'node:path'
import { test } from 'node:test'
import { freePort, publish, redisSkipReason, SseClient, startRedis, token, until, WsClient } from './helper.js'
import { cleanup, spawnTs, startServer, withTimeout, type Server } from './support/process.js'

const SECRET = 'workers-test-secret-0123456789abcdef'
const ROOT = join(import.meta.dirname, '..')
const skip = redisSkipReason()

interface Ready { node: string, pid: number, worker?: number }

/** GET on a connection of its own (fetch would reuse one kept-alive connection, and so always one worker). */
async function getFresh (url: string): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: string }> {
  return await new Promise((resolve, reject) => {
    // A connection the primary handed to a worker that was just killed gets no answer: give up on it.
    get(url, { agent: false, timeout: 5000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    }).on('error', reject).on('timeout', function (this: ClientRequest) { this.destroy(new Error('no answer')) })
  })
}

async function readyz (base: string): Promise<Ready | undefined> {
  try {
    const res = await getFresh(`${base}/readyz`)
    return res.status === 200 ? JSON.parse(res.body) as Ready : undefined
  } catch { return undefined }
}

/** Asks /readyz until every worker 1…n has answered; returns worker -> its current pid. */
async function workers (server: Server, n: number): Promise<Map<number, number>> {
  const seen = new Map<number, number>()
  await until(async () => {
    const r = await readyz(server.url)
    if (r?.worker !== undefined) seen.set(r.worker, r.pid)
    return seen.size === n
  }, `all ${n} workers answering /readyz`, 60_000)
  return seen
}

/** Opens WebSockets until one is held by each of the n workers (the connection id starts with the node id). */
async function socketPerWorker (server: Server, n: number): Promise<Map<string, WsClient>> {
  const held = new Map<string, WsClient>()
  const extra: WsClient[] = []
  for (let i = 0; i < 200 && held.size < n; i++) {
    const ws = await WsClient.connect(server.wsUrl, { token: token({}, { key: SECRET }) })
    const connected = await ws.waitFor((f) => f.type === 'connected')
    const node = String(connected.client).replace(/-[^-]+$/, '')
    if (held.has(node)) extra.push(ws)
    else held.set(node, ws)
  }
  for (const ws of extra) ws.close()
  assert.equal(held.size, n, 'the primary hands connections to every worker')
  return held
}

void test('WORKERS=2: two nodes on one port; /readyz and /metrics say which worker answered; events cross workers; a killed worker is restarted', { skip }, async (t) => {
  const redis = await startRedis(t)
  const server = await startServer({ WORKERS: '2', REDIS_URL: redis.url, JWT_SECRET: SECRET, LOG_LEVEL: 'info' })
  cleanup(t, server)
  const pids = await workers(server, 2)
  assert.notEqual(pids.get(1), pids.get(2))
  assert.ok(![...pids.values()].includes(server.child.pid!), 'the primary serves nothing itself')

  // One scrape covers the group: the primary sums the workers' registries, herald_node_info names each.
  const metrics = await getFresh(`${server.url}/metrics`)
  assert.match(String(metrics.headers['x-herald-worker']), /^[12]$/)
  const text = metrics.body
  for (const [w, pid] of pids) assert.match(text, new RegExp(`herald_node_info\\{node="[0-9a-f]+-w${w}",pid="${pid}",worker="${w}",version="[^"]+"\\} 1`))

  // A subscriber on each worker gets what is published through either.
  const sockets = await socketPerWorker(server, 2)
  t.after(() => { for (const ws of sockets.values()) ws.close() })
  for (const ws of sockets.values()) await ws.subscribe('w:room')
  for (let i = 1; i <= 4; i++) assert.equal((await publish(server.url, 'w:room', i, { token: token({}, { key: SECRET }) })).status, 201)
  for (const ws of sockets.values()) assert.deepEqual((await ws.events('w:room', 4)).map((e) => e.data), [1, 2, 3, 4])
  await until(async () => /herald_connections\{transport="websocket"\} 2\b/.test((await getFresh(`${server.url}/metrics`)).body), 'the summed metrics count both workers\' sockets', 10_000)

  // SIGKILL worker 1: the primary starts another in its slot; worker 2 and the port stay up meanwhile.
  const killed = pids.get(1)!
  process.kill(killed, 'SIGKILL')
  await until(async () => {
    const r = await readyz(server.url)
    return r?.worker === 1 && r.pid !== killed
  }, 'worker 1 restarted under a new pid', 60_000)
  assert.equal(server.child.exitCode, null, 'the primary is still running')
  assert.match(server.output(), /worker died; restarting it/)
  const after = await workers(server, 2)
  assert.equal(after.get(2), pids.get(2), 'worker 2 was not touched')

  // The primary killed outright (no drain possible): its workers notice it is gone and end themselves, no orphans.
  process.kill(server.child.pid!, 'SIGKILL')
  const gone = (pid: number): boolean => { try { process.kill(pid, 0); return false } catch { return true } }
  await until(() => [...after.values()].every(gone), 'the workers of a killed primary exit by themselves', 30_000)
})

void test('WORKERS=2, SIGTERM to the primary: every worker drains (WebSocket 1012, SSE disconnect), acknowledged publishes are kept, exit 0', { skip }, async (t) => {
  const redis = await startRedis(t)
  const server = await startServer({ WORKERS: '2', REDIS_URL: redis.url, JWT_SECRET: SECRET, DRAIN_TIMEOUT: '3', LOG_LEVEL: 'info' })
  cleanup(t, server)
  await workers(server, 2)
  const tok = token({}, { key: SECRET })
  const sockets = await socketPerWorker(server, 2)
  t.after(() => { for (const ws of sockets.values()) ws.close() })
  for (const ws of sockets.values()) await ws.subscribe('w:drain')
  const sse = await SseClient.open(server.url, ['w:drain'], { token: tok })
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed', 10_000)

  // A publisher keeps going through the drain: whatever was acknowledged must be in history afterwards.
  const acked: number[] = []
  let stop = false
  t.after(() => { stop = true })
  const publisher = (async () => {
    for (let n = 1; !stop && n < 100_000; n++) {
      try {
        const res = await publish(server.url, 'w:drain', { n }, { id: `d-${n}`, token: tok })
        if (res.status === 201) acked.push(n)
      } catch { await new Promise((resolve) => setTimeout(resolve, 20)) } // pace of retries while the port closes
    }
  })()
  await until(() => acked.length >= 20, '20 publishes acknowledged before SIGTERM', 15_000)

  process.kill(server.child.pid!, 'SIGTERM')
  for (const ws of sockets.values()) assert.equal((await ws.waitClosed(15_000)).code, 1012, 'every worker tells its sockets to reconnect elsewhere')
  const disconnect = await sse.waitFor((m) => m.data.type === 'disconnect', 15_000)
  assert.deepEqual([disconnect.data.code, disconnect.data.reconnect], [1012, true])
  const exit = await withTimeout(server.exited, 60_000, 'the primary to exit after SIGTERM').finally(() => { stop = true })
  await publisher
  assert.deepEqual(exit, { code: 0, signal: null }, server.output())
  assert.equal((server.output().match(/"msg":"worker stopped"/g) ?? []).length, 2, 'both workers stopped')
  assert.doesNotMatch(server.output(), /"msg":"worker died/)

  // Every acknowledged publish is in history (read through a fresh node on the same Redis).
  const reader = await startServer({ REDIS_URL: redis.url, JWT_SECRET: SECRET })
  cleanup(t, reader)
  const history = await (await fetch(`${reader.url}/v1/channels/w:drain/events?since=0&limit=1000`, { headers: { authorization: `Bearer ${tok}` } })).json() as { events: Array<{ data: { n: number } }> }
  const stored = new Set(history.events.map((e) => e.data.n))
  for (const n of acked) assert.ok(stored.has(n), `acknowledged publish ${n} is in history`)
  t.diagnostic(`${acked.length} publishes acknowledged through the drain, all in history`)
})

void test('WORKERS=2 on the in-process bus refuses to start, saying why', async (t) => {
  const proc = spawnTs('src/server.ts', [], { env: { PORT: String(await freePort()), WORKERS: '2', JWT_SECRET: SECRET } })
  cleanup(t, proc)
  const exit = await withTimeout(proc.exited, 30_000, 'the refusal')
  assert.equal(exit.code, 78, proc.output())
  assert.match(proc.stderr(), /WORKERS=2 needs a shared bus: set REDIS_URL or REDIS_CLUSTER/)
})

void test('SIGTERM to `npm start` reaches Herald: it drains (WebSocket 1012) and exits, leaving no process behind', async (t) => {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const env: Record<string, string> = { PORT: String(port), JWT_SECRET: SECRET, LOG_LEVEL: 'info' }
  for (const key of ['PATH', 'HOME', 'TMPDIR']) if (process.env[key] !== undefined) env[key] = process.env[key]!
  const npm = spawn('npm', ['start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  npm.stdout!.on('data', (d: Buffer) => { output += d.toString() })
  npm.stderr!.on('data', (d: Buffer) => { output += d.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => npm.once('exit', (code, signal) => resolve({ code, signal })))
  let herald: number | undefined
  t.after(() => {
    if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL')
    if (herald !== undefined) try { process.kill(herald, 'SIGKILL') } catch {}
  })
  await until(async () => {
    if (npm.exitCode !== null) throw new Error('npm start exited during start-up: ' + output)
    herald = (await readyz(base))?.pid
    return herald !== undefined
  }, 'npm start serving', 60_000)
  assert.notEqual(herald, npm.pid, 'Herald runs in a process of its own under npm')
  const ws = await WsClient.connect(`ws://127.0.0.1:${port}`, { token: token({}, { key: SECRET }) })
  t.after(() => ws.close())

  process.kill(npm.pid!, 'SIGTERM')
  assert.equal((await ws.waitClosed(15_000)).code, 1012, 'Herald drained: the socket is told to reconnect elsewhere')
  await withTimeout(exited, 30_000, 'npm start to exit after SIGTERM')
  // Herald itself is gone too (an orphan would still hold the port).
  await until(() => { try { process.kill(herald!, 0); return false } catch { return true } }, 'the Herald process to exit', 15_000)
  assert.match(output, /"msg":"draining"/)
})

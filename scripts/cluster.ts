import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { createSigner } from 'fast-jwt'
import { freeLoopbackPort, startProxy, type ProxyKind, type RunningProxy } from '../deploy/proxies.js'

/*
 * A local Herald cluster in one command, everything on loopback:
 *
 *   npm run cluster [-- --nodes 3 --proxy nginx|haproxy --port 8080 --redis single|cluster]
 *
 * (or NODES, PROXY, PORT, REDIS env). It starts a private redis-server on a free port (`--redis cluster`: a Redis
 * Cluster of 3 primaries with a replica each; REDIS_URL or REDIS_CLUSTER: use that instead), N Herald nodes
 * (src/server.ts) on free ports, and the shipped nginx or HAProxy configuration (deploy/proxies.ts) in front of
 * them on PORT. It prints `Herald cluster ready: http://127.0.0.1:<port>` and a development token. SIGINT or
 * SIGTERM drains the nodes (SIGTERM each), then stops the proxy and Redis and removes its temporary directory; if
 * any of its processes dies, it says which and stops the rest (exit code 1).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
const HOST = '127.0.0.1'

const { values: opts } = parseArgs({
  options: {
    nodes: { type: 'string', default: process.env.NODES ?? '3' },
    proxy: { type: 'string', default: process.env.PROXY ?? 'nginx' },
    port: { type: 'string', default: process.env.PORT },
    redis: { type: 'string', default: process.env.REDIS ?? 'single' },
    help: { type: 'boolean', default: false }
  }
})
const usage = 'usage: npm run cluster [-- --nodes N] [--proxy nginx|haproxy] [--port PORT] [--redis single|cluster]\n' +
  'Environment: NODES, PROXY, PORT, REDIS; REDIS_URL or REDIS_CLUSTER to use a Redis you run; JWT_SECRET to sign with your key;\n' +
  'any other Herald setting (LOG_LEVEL, SSE_HEARTBEAT, ...) is passed to every node.\n'
const nodeCount = Number(opts.nodes)
const kind = opts.proxy as ProxyKind
if (opts.help) { process.stdout.write(usage); process.exit(0) }
if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > 32) fail(`--nodes/NODES must be 1 to 32, not ${JSON.stringify(opts.nodes)}`)
if (kind !== 'nginx' && kind !== 'haproxy') fail(`--proxy/PROXY must be nginx or haproxy, not ${JSON.stringify(opts.proxy)}`)
if (opts.redis !== 'single' && opts.redis !== 'cluster') fail(`--redis/REDIS must be single or cluster, not ${JSON.stringify(opts.redis)}`)

function fail (message: string): never {
  process.stderr.write(`npm run cluster: ${message}\n${usage}`)
  process.exit(2)
}

/** A process this script started: its name for messages, the tail of what it printed, and whether it is gone. */
interface Owned { name: string, proc: ChildProcess, tail: string[], gone: boolean, exited: Promise<void> }

const owned: Owned[] = []
let proxy: RunningProxy | undefined
let stopping = false
const runDir = mkdtempSync(join(tmpdir(), 'herald-cluster-'))

/** Starts a process; `echo` picks the lines of it to show on stderr (all are kept in its tail for a death report). */
function own (name: string, command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string, echo: (line: string) => boolean): Owned {
  // Its own process group: a Ctrl-C in the terminal reaches only this script, which then stops everything in
  // order (nodes drain while the proxy and Redis still run), instead of every process at once.
  const proc = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let exit!: () => void
  const o: Owned = { name, proc, tail: [], gone: false, exited: new Promise((resolve) => { exit = resolve }) }
  // `exit`, or `error` alone when it could not be started at all (no such command).
  const gone = (how: string | number | null): void => {
    if (o.gone) return
    o.gone = true
    exit()
    if (!stopping) died(name, proc.pid, how, o.tail)
  }
  proc.once('exit', (code, signal) => gone(code ?? signal))
  proc.once('error', (err) => { o.tail.push(err.message); gone(err.message) })
  for (const stream of [proc.stdout!, proc.stderr!]) {
    let buf = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      buf += chunk
      let at
      while ((at = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, at)
        buf = buf.slice(at + 1)
        o.tail = [...o.tail.slice(-19), line]
        if (echo(line)) process.stderr.write(`[${name}] ${line}\n`)
      }
    })
  }
  owned.push(o)
  return o
}

function died (name: string, pid: number | undefined, how: string | number | null, tail: string[]): void {
  if (stopping) return
  const what = pid === undefined ? `${name} could not start (${String(how)})` : `${name} (pid ${pid}) exited (${String(how)})`
  process.stderr.write(`\n${what}; stopping the cluster.\n${tail.slice(-10).map((l) => `  ${l}`).join('\n')}\n`)
  void stop(1)
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
async function terminate (o: Owned, graceMs: number): Promise<void> {
  if (o.gone) return
  o.proc.kill('SIGTERM')
  const timer = setTimeout(() => { if (!o.gone) o.proc.kill('SIGKILL') }, graceMs)
  await o.exited
  clearTimeout(timer)
}

/**
 * Drains the nodes (SIGTERM; each closes its WebSockets with 1012 and ends its streams), then stops the proxy, then
 * Redis, and exits. Called again while it runs (a Ctrl-C reaches this process from the terminal and again from
 * npm), it only waits for the first call.
 */
let stopped: Promise<never> | undefined
async function stop (code: number): Promise<never> {
  stopped ??= (async () => {
    stopping = true
    const drain = (Number(process.env.DRAIN_TIMEOUT ?? 10) + 5) * 1000
    // Each step runs even if one before it failed: nothing this script started may be left behind.
    const step = async (what: string, run: () => Promise<unknown>): Promise<void> => {
      await run().catch((err: unknown) => { process.stderr.write(`npm run cluster: stopping ${what}: ${(err as Error).message}\n`) })
    }
    await step('the nodes', async () => await Promise.all(owned.filter((o) => o.name.startsWith('herald')).map(async (o) => await terminate(o, drain))))
    await step(kind, async () => await proxy?.stop())
    await step('Redis', async () => await Promise.all(owned.filter((o) => o.name.startsWith('redis')).map(async (o) => await terminate(o, 5000))))
    rmSync(runDir, { recursive: true, force: true })
    if (code === 0) process.stderr.write('Herald cluster stopped.\n')
    process.exit(code)
  })()
  return await stopped
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => { void stop(0) })

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** Polls `check` every 50 ms until it holds; fails after `ms` or when `watched` exits first. */
async function waitFor (what: string, check: () => Promise<boolean>, ms: number, watched?: Owned): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check().catch(() => false)) {
    if (stopping) await new Promise(() => {})
    if (watched !== undefined && watched.gone) throw new Error(`${watched.name} exited while starting`)
    if (Date.now() > deadline) throw new Error(`${what} within ${ms / 1000} s`)
    await sleep(50)
  }
}

/** One RESP command on a fresh connection; resolves with the raw reply. */
async function redisCommand (port: number, ...words: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, HOST)
    let reply = ''
    socket.setTimeout(2000, () => { socket.destroy(); reject(new Error('timeout')) })
    socket.once('error', reject)
    socket.on('data', (d: Buffer) => {
      reply += d.toString()
      // A simple reply is one line; a bulk reply (`$<length>`, CLUSTER INFO) is complete once its body is in.
      const bulk = /^\$(\d+)\r\n/.exec(reply)
      const done = bulk === null ? reply.endsWith('\r\n') : Buffer.byteLength(reply) >= bulk[0].length + Number(bulk[1]) + 2
      if (done) { socket.end(); resolve(reply) }
    })
    socket.write(`*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join('')}`)
  })
}

async function startRedis (port: number, extra: string[]): Promise<void> {
  const dir = join(runDir, `redis-${port}`)
  mkdirSync(dir)
  const o = own(`redis-${port}`, 'redis-server', ['--port', String(port), '--bind', HOST, '--dir', dir, '--save', '', '--appendonly', 'no', '--loglevel', 'warning', ...extra], process.env, dir, () => false)
  await waitFor(`redis-server on ${port} to answer PING`, async () => (await redisCommand(port, 'PING')).startsWith('+PONG'), 15_000, o)
}

/** A free port whose cluster bus port (+10000) is free too. */
async function clusterPort (taken: Set<number>): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const p = await freeLoopbackPort()
    if (p + 10000 > 65535 || taken.has(p) || taken.has(p + 10000)) continue
    const bus = await new Promise<boolean>((resolve) => { const s = connect(p + 10000, HOST); s.once('connect', () => { s.destroy(); resolve(false) }); s.once('error', () => resolve(true)) })
    if (bus) { taken.add(p); taken.add(p + 10000); return p }
  }
  throw new Error('no free port pair for a Redis Cluster node')
}

/** The bus for the nodes: REDIS_URL / REDIS_CLUSTER as given, else a private Redis (or Redis Cluster) started here. */
async function startBus (): Promise<{ REDIS_URL?: string, REDIS_CLUSTER?: string, describe: string }> {
  if (process.env.REDIS_URL !== undefined && process.env.REDIS_URL !== '') return { REDIS_URL: process.env.REDIS_URL, describe: `Redis ${process.env.REDIS_URL} (given)` }
  if (process.env.REDIS_CLUSTER !== undefined && process.env.REDIS_CLUSTER !== '') return { REDIS_CLUSTER: process.env.REDIS_CLUSTER, describe: `Redis Cluster ${process.env.REDIS_CLUSTER} (given)` }
  if (opts.redis === 'single') {
    const port = await freeLoopbackPort()
    await startRedis(port, [])
    return { REDIS_URL: `redis://${HOST}:${port}`, describe: `Redis redis://${HOST}:${port}` }
  }
  const taken = new Set<number>()
  const ports: number[] = []
  for (let i = 0; i < 6; i++) ports.push(await clusterPort(taken))
  await Promise.all(ports.map(async (p) => await startRedis(p, ['--cluster-enabled', 'yes', '--cluster-config-file', join(runDir, `nodes-${p}.conf`), '--cluster-node-timeout', '2000'])))
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `${HOST}:${p}`), '--cluster-replicas', '1', '--cluster-yes'], { encoding: 'utf8' })
  if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.error?.message ?? ''}${create.stdout}${create.stderr}`)
  for (const p of ports) await waitFor(`the Redis Cluster node on ${p} to say cluster_state:ok`, async () => (await redisCommand(p, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 60_000)
  const seeds = ports.map((p) => `${HOST}:${p}`).join(',')
  return { REDIS_CLUSTER: seeds, describe: `Redis Cluster of 3 primaries and 3 replicas (${seeds})` }
}

/** The proxy's port: --port/PORT (must be free), else 8080 if free, else any free one. */
async function proxyPort (): Promise<number> {
  const free = async (p: number): Promise<boolean> => await new Promise((resolve) => { const s = connect(p, HOST); s.once('connect', () => { s.destroy(); resolve(false) }); s.once('error', () => resolve(true)) })
  if (opts.port !== undefined && opts.port !== '') {
    const p = Number(opts.port)
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`--port/PORT must be a port number, not ${JSON.stringify(opts.port)}`)
    if (!await free(p)) throw new Error(`port ${p} is in use on ${HOST}`)
    return p
  }
  return await free(8080) ? 8080 : await freeLoopbackPort()
}

async function main (): Promise<void> {
  const port = await proxyPort()
  const bus = await startBus()

  // Every node signs and checks tokens with one key: JWT_SECRET if given; else a development secret made here,
  // which each node finds in its working directory (.herald/dev-secret) and so also serves the demo's /dev/token.
  const given = process.env.JWT_SECRET ?? ''
  const secret = given !== '' ? given : randomBytes(32).toString('base64url')
  if (given === '' && process.env.JWT_PUBLIC_KEY === undefined) {
    mkdirSync(join(runDir, '.herald'))
    writeFileSync(join(runDir, '.herald', 'dev-secret'), secret + '\n', { mode: 0o600 })
  }

  const nodes = await Promise.all(Array.from({ length: nodeCount }, async (_, i) => {
    const nodePort = await freeLoopbackPort()
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PORT: String(nodePort),
      HOST,
      REDIS_URL: bus.REDIS_URL,
      REDIS_CLUSTER: bus.REDIS_CLUSTER,
      LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
      NAMESPACES_FILE: process.env.NAMESPACES_FILE ?? join(ROOT, 'deploy', 'namespaces.yaml'),
      // The proxy in front is on loopback: believe its X-Forwarded-For, so per-address limits see each client.
      TRUST_PROXY: process.env.TRUST_PROXY ?? HOST
    }
    for (const key of ['NODES', 'PROXY', 'REDIS']) delete env[key]
    // Its log lines (JSON, LOG_LEVEL warn by default) are shown; its development banner is not (this prints one for all).
    const o = own(`herald-${i + 1}`, process.execPath, ['--import', TSX, join(ROOT, 'src', 'server.ts')], env, runDir, (line) => line.startsWith('{'))
    await waitFor(`herald-${i + 1} to answer /readyz 200`, async () => (await fetch(`http://${HOST}:${nodePort}/readyz`)).status === 200, 60_000, o)
    return { port: nodePort, pid: o.proc.pid }
  }))

  mkdirSync(join(runDir, kind))
  proxy = await startProxy(kind, { upstreams: nodes.map((n) => `${HOST}:${n.port}`), port, host: HOST, dir: join(runDir, kind), detached: true })
  void proxy.exited.then(({ code, signal }) => died(kind, proxy?.pid, code ?? signal, proxy?.output().trim().split('\n') ?? []))

  const url = `http://${HOST}:${port}`
  const token = createSigner({ key: secret, expiresIn: 24 * 3600 * 1000 })({ sub: 'dev', subscribe: ['*'], publish: ['*'] })
  const redisPids = owned.filter((o) => o.name.startsWith('redis')).map((o) => o.proc.pid)
  process.stdout.write([
    `Herald cluster ready: ${url}`,
    `  ${kind} (pid ${proxy.pid}) on ${HOST}:${port} → ${nodeCount} Herald node${nodeCount === 1 ? '' : 's'}: ${nodes.map((n) => `${HOST}:${n.port} (pid ${String(n.pid)})`).join(', ')}`,
    `  ${bus.describe}${redisPids.length > 0 ? ` (pid ${redisPids.join(', ')})` : ''}; run directory ${runDir}`,
    given === '' ? `  Demo page: ${url}/` : '  Demo page: needs /dev/token, which nodes with a configured JWT_SECRET do not serve',
    '  A development token (24 h; subscribe and publish everything):',
    `  TOKEN=${token}`,
    `  curl -N -H "Authorization: Bearer $TOKEN" '${url}/v1/sse?channel=demo:hello'`,
    `  curl -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"data":{"hello":"world"}}' ${url}/v1/channels/demo:hello/events`,
    `  Stop: Ctrl-C (or kill -TERM ${process.pid}) drains the nodes, then stops ${kind} and Redis.`,
    ''
  ].join('\n'))
}

main().catch(async (err: unknown) => {
  if (stopping) return
  process.stderr.write(`npm run cluster: ${(err as Error).message}\n`)
  await stop(1)
})

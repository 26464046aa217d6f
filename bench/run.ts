/**
 * The benchmark: the same load-generator scenarios against Herald (in-process bus, Redis bus), Socket.IO 4 with
 * the Redis adapter, and a bare `ws` + ioredis fan-out server, each started here as a child process, one after
 * another, each with its own private redis-server.
 *
 *   npm run bench                       full run (tens of minutes); writes docs/benchmarks.md and docs/benchmarks.svg
 *   npm run bench -- --quick            a few hundred connections, a few seconds per scenario (< ~2 min)
 *   npm run bench -- --only 1,3 --peers herald-redis,bare-ws
 *   npm run bench -- --profile herald-redis --only 1     node --cpu-prof on that server; see bench/profile-top.ts
 *   npm run bench -- --report bench/results/full.json     regenerate the docs from saved results
 *   npm run bench -- --only 1 --rate 200 --no-docs         scenario 1 at another publish rate (events/s)
 *   npm run bench -- --only 5 --mix 0,100,0 --no-docs      scenario 5 with another transport mix (ws,sse,poll %)
 *   npm run bench -- --only 8 --no-floor                  without bench/floor.ts (run before scenarios 1 and 8 otherwise)
 *   npm run bench -- --only 8 --rounds 5                  scenarios 1 and 8 in 5 rounds (full runs: 3, quick: 1); see lib/rounds.ts
 */
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync, rmSync } from 'node:fs'
import { cpus, loadavg, release, totalmem, tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { resolveOptions, type LoadOptions } from './lib/options.js'
import { LoadSession, runLoadtest, type SessionHooks, type StageResult } from './lib/session.js'
import { fdLimits, sampleProc } from './lib/server-stats.js'
import { freePort, hasRedis, spawnWithFds, startRedis, waitHttp, TSX_LOADER, type Managed } from './lib/procs.js'
import { sleep } from './lib/publisher.js'
import { PEERS, SCENARIOS, stageFigures, type FloorResult, type PeerDef, type PeerId, type RunResult, type ScenarioDef, type ScenarioId, type ScenarioSize, type StepResult } from './lib/scenarios.js'
import { consoleReport, markdownResults, spliceDoc, svgReport, type BenchResults } from './lib/docs.js'
import { combineFloors, combineRounds, rotated } from './lib/rounds.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const RESULTS_DIR = join(ROOT, 'bench', 'results')
const SECRET = 'bench-' + randomBytes(16).toString('hex')
/** The fixed-rate scenarios whose CPU per delivery is compared with bench/floor.ts in the same run. */
const FLOOR_SCENARIOS: ScenarioId[] = ['latency', 'latency-20k']

interface Args {
  quick: boolean
  only: ScenarioId[]
  peers: PeerId[]
  profile: PeerId[]
  writeDocs: boolean
  report?: string
  out?: string
  /** Replace only the (scenario, server) results of this run in an existing results file. */
  merge?: string
  fresh: boolean
  /** Publish rate override (events/s) for the fixed-load scenarios (1, 5 and 6): a point on the latency/load curve. */
  rate?: number
  /** Transport mix override (percent ws,sse,poll) for scenario 5: e.g. all SSE against all WebSocket in one run. */
  mix?: { ws: number, sse: number, poll: number }
  /** Run bench/floor.ts before scenarios 1 and 8 (default; --no-floor skips it). */
  floor: boolean
  /** Rounds of scenarios 1 and 8 (FLOOR_SCENARIOS), servers rotated each round; default 3 in full runs, 1 in quick ones. */
  rounds?: number
}

function parseArgs (argv: string[]): Args {
  const a: Args = { quick: false, only: SCENARIOS.map((s) => s.id), peers: PEERS.filter((p) => p.diagnostic !== true).map((p) => p.id), profile: [], writeDocs: false, fresh: true, floor: true }
  let docs: boolean | undefined
  let fresh: boolean | undefined
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const val = (): string => { const v = argv[++i]; if (v === undefined) throw new Error(`${arg} needs a value`); return v }
    const list = (): string[] => val().split(',').map((s) => s.trim()).filter(Boolean)
    switch (arg) {
      case '--quick': a.quick = true; break
      case '--only': a.only = list().map((s) => {
        const sc = SCENARIOS.find((x) => x.id === s || String(x.number) === s)
        if (sc === undefined) throw new Error(`unknown scenario ${s} (1-7 or ${SCENARIOS.map((x) => x.id).join(', ')})`)
        return sc.id
      }); break
      case '--peers': a.peers = list().map((s) => { if (!PEERS.some((p) => p.id === s)) throw new Error(`unknown peer ${s} (${PEERS.map((p) => p.id).join(', ')})`); return s as PeerId }); break
      case '--profile': a.profile = list() as PeerId[]; break
      case '--write-docs': docs = true; break
      case '--no-docs': docs = false; break
      case '--report': a.report = val(); break
      case '--out': a.out = val(); break
      case '--merge': a.merge = val(); break
      case '--fresh': fresh = true; break
      case '--shared': fresh = false; break
      case '--no-floor': a.floor = false; break
      case '--rounds': { const n = Number(val()); if (!Number.isInteger(n) || n <= 0 || n > 20) throw new Error('--rounds needs a whole number from 1 to 20'); a.rounds = n; break }
      case '--rate': { const n = Number(val()); if (!Number.isInteger(n) || n <= 0) throw new Error('--rate needs a positive integer'); a.rate = n; break }
      case '--mix': {
        const [ws, sse, poll] = val().split(',').map(Number)
        if (![ws, sse, poll].every((n) => Number.isInteger(n) && n >= 0) || ws + sse + poll !== 100) throw new Error('--mix needs ws,sse,poll percentages adding up to 100')
        a.mix = { ws, sse, poll }
        break
      }
      case '-h': case '--help':
        process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0].replace(/^\/\*\*?/, '').replace(/^ \* ?/gm, '') + '\n')
        process.exit(0)
        break
      default: throw new Error(`unknown option ${arg}`)
    }
  }
  a.writeDocs = docs ?? !a.quick
  a.fresh = fresh ?? !a.quick
  return a
}

/** Runs this script again under a raised open-files limit, when the soft limit is below what the hard one allows. */
async function reexecWithFds (): Promise<number | undefined> {
  const lim = fdLimits()
  if (lim === undefined || process.env.HERALD_BENCH_FDS === '1') return undefined
  const want = Math.min(lim.hard, 200_000)
  if (lim.soft >= want) return undefined
  const child = spawn('bash', ['-c', 'ulimit -n "$0" 2>/dev/null; exec "$@"', String(want), process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit', env: { ...process.env, HERALD_BENCH_FDS: '1' }
  })
  const forward = (sig: NodeJS.Signals): void => { child.kill(sig) }
  process.on('SIGINT', forward)
  process.on('SIGTERM', forward)
  return await new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal !== null ? 1 : 0))))
}

// ---------------------------------------------------------------- one run

interface Active { session?: LoadSession, server?: Managed, redis?: Managed }
const active: Active = {}

async function stopActive (): Promise<void> {
  const { session, server, redis } = active
  active.session = undefined
  active.server = undefined
  active.redis = undefined
  await session?.close().catch(() => {})
  await server?.stop().catch(() => {})
  await redis?.stop().catch(() => {})
}

async function startPeer (peer: PeerDef, scenario: string, logDir: string, profile: boolean): Promise<{ url: string, server: Managed, redis?: Managed & { url: string } }> {
  const redis = peer.redis ? await startRedis(logDir) : undefined
  active.redis = redis
  const port = await freePort()
  const env: Record<string, string> = {
    PORT: String(port),
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    NODE_ENV: 'production',
    JWT_SECRET: SECRET,
    MAX_CONNECTIONS: '1000000',
    MAX_CONNECTIONS_PER_SUB: '1000000',
    WS_RATE: '100000',
    WS_BURST: '100000',
    CONNECT_RATE: '1000000',
    CONNECT_BURST: '1000000',
    RATE_LIMIT_MAX: '10000000',
    DRAIN_TIMEOUT: '2',
    REDIS_PREFIX: 'bench'
  }
  if (redis !== undefined) env.REDIS_URL = redis.url
  Object.assign(env, peer.env)
  // One directory per run: with tsx's module hooks there is a second (loader) thread, which writes its own profile;
  // the main thread's is the one whose name has thread id 0 (CPU.<date>.<time>.<pid>.0.<seq>.cpuprofile).
  const profDir = join(RESULTS_DIR, 'profiles', `${peer.id}-${scenario}-${new Date().toISOString().replace(/[:.]/g, '-')}`)
  if (profile) mkdirSync(profDir, { recursive: true })
  const node = [process.execPath, ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []), '--import', TSX_LOADER, join(ROOT, peer.script)]
  const server = spawnWithFds(`${peer.id}-${scenario}`, node, env, ROOT, logDir)
  active.server = server
  const url = `http://127.0.0.1:${port}`
  await waitHttp(url + '/healthz', server.proc, 30_000)
  return { url, server, redis }
}

interface Started { url: string, server: Managed, redis?: Managed & { url: string } }

async function runOne (sc: ScenarioDef, peer: PeerDef, size: ScenarioSize, quick: boolean, profile: boolean, logDir: string, shared?: Started): Promise<RunResult> {
  const started = Date.now()
  const result: RunResult = { scenario: sc.id, peer: peer.id, ok: false, seconds: 0, connections: size.connections, ready: 0, failed: 0, warnings: [] }
  const tag = `[S${sc.number} ${peer.id}]`
  const tty = process.stderr.isTTY
  const hooks: SessionHooks = {
    onProgress: (line, final) => {
      if (tty) process.stderr.write('\r\x1b[K' + (line === '' ? '' : tag + ' ' + line) + (final && line !== '' ? '\n' : ''))
      else if (line !== '') process.stderr.write(tag + ' ' + line + '\n')
    },
    onWarning: (m) => { process.stderr.write((tty ? '\r\x1b[K' : '') + tag + ' warning: ' + m + '\n') }
  }
  try {
    const { url, server, redis } = shared ?? await startPeer(peer, sc.id, logDir, profile)
    await sleep(quick ? 300 : 1500) // let the server settle before its baseline
    const opts: Partial<LoadOptions> = {
      targets: [url],
      protocol: peer.protocol,
      connections: size.connections,
      rooms: size.rooms,
      subsPerConn: size.subsPerConn ?? 1,
      mix: size.mix,
      rate: size.rate,
      publishVia: 'rest',
      payload: 128,
      duration: size.duration,
      warmup: size.warmup,
      ramp: size.ramp,
      maxPending: size.maxPending,
      secret: peer.protocol === 'herald' ? SECRET : undefined,
      serverPid: server.pid,
      extraPids: redis !== undefined ? [{ name: 'redis', pid: redis.pid }] : [],
      drainTimeout: quick ? 5 : 10,
      connectTimeout: sc.kind === 'storm' ? 150 : 30,
      maxSeconds: size.capSeconds,
      progress: tty ? 'tty' : 'plain',
      // Quick runs are small: the generator runs in this process, which saves forking workers each time.
      workers: quick ? 0 : -1
    }
    if (sc.kind === 'fixed') {
      const summary = await runLoadtest(resolveOptions(opts), hooks)
      result.summary = summary
      Object.assign(result, stageFigures(summary.stages[0]))
      result.warnings.push(...summary.warnings, ...summary.stages[0].warnings)
      connectFigures(result, summary.connect)
    } else if (sc.kind === 'stepped') {
      await maxThroughput(result, resolveOptions({ ...opts, rate: 0, duration: 0 }), size, hooks, quick)
    } else if (sc.kind === 'idle') {
      const before = await medianRss(server.pid, 3, quick ? 200 : 1000)
      const session = await LoadSession.open(resolveOptions({ ...opts, rate: 0, duration: 0 }), hooks)
      active.session = session
      try {
        await sleep(size.idle * 1000)
        const after = await medianRss(server.pid, 3, quick ? 200 : 1000)
        const summary = session.summary()
        result.summary = summary
        connectFigures(result, summary.connect)
        result.warnings.push(...summary.warnings)
        result.rssBeforeBytes = before
        result.rssAfterBytes = after
        result.rssPerConnectionBytes = before !== null && after !== null && result.ready > 0 ? (after - before) / result.ready : null
      } finally {
        await session.close()
        active.session = undefined
      }
    } else {
      const session = await LoadSession.open(resolveOptions({ ...opts, rate: 0, duration: 0, ramp: 0 }), hooks)
      active.session = session
      try {
        const summary = session.summary()
        result.summary = summary
        result.warnings.push(...summary.warnings)
        connectFigures(result, summary.connect)
      } finally {
        await session.close()
        active.session = undefined
      }
    }
    result.ok = result.failed === 0 || result.ready > 0
  } catch (err) {
    result.ok = false
    result.error = (err as Error).message
  } finally {
    const server = active.server
    if (shared === undefined) await stopActive()
    else { await active.session?.close().catch(() => {}); active.session = undefined }
    if (!result.ok && server !== undefined && existsSync(server.log)) {
      const tail = readFileSync(server.log, 'utf8').trim().split('\n').slice(-5).join(' | ')
      if (tail !== '') result.error = (result.error ?? '') + ' — server log: ' + tail.slice(0, 400)
    }
  }
  result.seconds = (Date.now() - started) / 1000
  return result
}

function connectFigures (result: RunResult, c: LoadSession['connect']): void {
  result.ready = c.ready
  result.failed = c.failed
  result.allSubscribedMs = c.allSubscribedMs
  result.connect = c.connectMs
  result.subscribed = c.subscribedMs
}

async function medianRss (pid: number, samples: number, gapMs: number): Promise<number | null> {
  const v: number[] = []
  for (let i = 0; i < samples; i++) {
    const s = sampleProc(pid)
    if (s !== undefined) v.push(s.rssBytes)
    if (i < samples - 1) await sleep(gapMs)
  }
  v.sort((a, b) => a - b)
  return v.length === 0 ? null : v[Math.floor(v.length / 2)]
}

/** Steps the publish rate up until p99 ≥ 50 ms, a loss, or the rate cannot be held; then one step halfway back. */
async function maxThroughput (result: RunResult, o: LoadOptions, size: ScenarioSize, hooks: SessionHooks, quick: boolean): Promise<void> {
  const session = await LoadSession.open(o, hooks)
  active.session = session
  const steps: StepResult[] = []
  result.steps = steps
  try {
    connectFigures(result, session.connect)
    // Deliveries per publish: the subscriptions of a room (each connection holds subsPerConn rooms).
    const subsPerRoom = session.connect.ready * o.subsPerConn / o.rooms
    const deadline = Date.now() + size.capSeconds * 1000 - 30_000
    const stepSeconds = size.warmup + size.duration + 8
    const stageOf = new Map<StepResult, StageResult>()
    const runStep = async (target: number): Promise<StepResult> => {
      const rate = Math.max(1, Math.round(target / subsPerRoom))
      const st = await session.runStage({ label: `${Math.round(target)}/s`, rate, duration: size.duration, warmup: size.warmup })
      const why: string[] = []
      if (st.latency.p99 >= 50) why.push('p99 ≥ 50 ms')
      if (st.deliveries.lost > 0 || st.deliveries.duplicates > 0) why.push(`${st.deliveries.lost} lost`)
      if (!st.deliveries.complete) why.push('not drained')
      if (st.published.perSec < rate * 0.95) why.push(`published ${st.published.perSec.toFixed(0)}/${rate}/s`)
      if (st.deliveries.droppedConnections > 0) why.push(`${st.deliveries.droppedConnections} connections dropped`)
      const step: StepResult = {
        targetPerSec: rate * subsPerRoom,
        rate,
        perSec: st.deliveries.perSec,
        p99: st.latency.p99,
        lost: st.deliveries.lost,
        pass: why.length === 0,
        why: why.join(', '),
        usPerDelivery: st.server?.usPerDelivery ?? null,
        generatorCores: st.generator.cores
      }
      result.warnings.push(...st.warnings.map((w) => `${step.targetPerSec.toFixed(0)}/s: ${w}`))
      steps.push(step)
      stageOf.set(step, st)
      return step
    }
    let lastPass: StepResult | undefined
    let firstFail: StepResult | undefined
    for (const target of size.steps) {
      if (Date.now() + stepSeconds * 1000 > deadline) { result.warnings.push('time cap reached before the rate stopped passing'); break }
      let step = await runStep(target)
      // A step fails only if it fails twice: one garbage-collection pause can push a 10 s window's p99 over 50 ms.
      const sound = step.why.indexOf('dropped') < 0 && step.why.indexOf('not drained') < 0
      if (!step.pass && !quick && sound && Date.now() + stepSeconds * 1000 < deadline) {
        await sleep(2000)
        step = await runStep(target)
      }
      if (step.pass) lastPass = step
      else { firstFail = step; break }
      await sleep(1000)
    }
    // One step halfway between the last pass and the first failure, if the session is still sound.
    if (!quick && firstFail !== undefined && firstFail.why.indexOf('dropped') < 0 && firstFail.why.indexOf('not drained') < 0 && Date.now() + stepSeconds * 1000 < deadline) {
      const low = lastPass?.targetPerSec ?? firstFail.targetPerSec / 2
      await sleep(3000)
      const mid = await runStep((low + firstFail.targetPerSec) / 2)
      if (mid.pass && (lastPass === undefined || mid.perSec > lastPass.perSec)) lastPass = mid
    }
    result.maxSustainedPerSec = lastPass?.perSec ?? null
    if (lastPass !== undefined) result.latency = stageOf.get(lastPass)?.latency
    if (firstFail === undefined && lastPass !== undefined) result.warnings.push(`every step passed: the maximum is above ${Math.round(lastPass.perSec)}/s (add steps)`)
    result.summary = session.summary()
  } finally {
    await session.close()
    active.session = undefined
  }
}

/**
 * bench/floor.ts in a fixed-rate scenario's shape (its connections, its deliveries per second), run as a child like
 * the servers: the raw cost of a small loopback write on this machine, in the same run as the servers it bounds.
 */
async function runFloor (sc: ScenarioDef, size: ScenarioSize, askedPerSec: number, logDir: string): Promise<FloorResult | string> {
  const command = [process.execPath, '--import', TSX_LOADER, join(ROOT, 'bench', 'floor.ts'),
    '--connections', String(size.connections), '--rate', String(askedPerSec), '--seconds', String(Math.max(1, Math.min(size.duration, 10))), '--json']
  const child = spawnWithFds(`floor-${sc.id}`, command, {}, ROOT, logDir)
  let timer: NodeJS.Timeout | undefined
  const exited = new Promise<number | null>((resolve) => child.proc.once('exit', (code) => resolve(code)))
  const timedOut = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), 120_000) })
  const end = await Promise.race([exited, timedOut])
  clearTimeout(timer)
  if (end === 'timeout') { await child.stop(); return 'bench/floor.ts did not finish within 120 s' }
  const lines = readFileSync(child.log, 'utf8').trim().split('\n')
  const last = lines[lines.length - 1] ?? ''
  if (end !== 0 || !last.startsWith('{')) return `bench/floor.ts failed (exit ${String(end)}): ${last.slice(0, 200)}`
  const f = JSON.parse(last) as Omit<FloorResult, 'scenario'>
  return { scenario: sc.id, connections: f.connections, askedPerSec: f.askedPerSec, perSec: f.perSec, serverUs: f.serverUs, serverUserUs: f.serverUserUs, serverSystemUs: f.serverSystemUs, readersUs: f.readersUs }
}

// ---------------------------------------------------------------- main

function machine (lim: ReturnType<typeof fdLimits>): BenchResults['machine'] {
  const hard = lim?.hard ?? 1024
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    kernel: release(),
    memGiB: totalmem() / 2 ** 30,
    fdSoft: lim?.soft ?? 0,
    fdHard: hard,
    connectionCap: Math.min(20_000, Math.floor((Math.min(hard, lim?.soft ?? hard) - 300) / 100) * 100)
  }
}

/** The Herald under test (read-only git queries; undefined outside a git checkout). */
function heraldVersion (): BenchResults['herald'] {
  const git = (...args: string[]): string | undefined => {
    const r = spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' })
    return r.status === 0 ? r.stdout : undefined
  }
  const commit = git('rev-parse', 'HEAD')?.trim()
  if (commit === undefined) return undefined
  // Porcelain lines are `XY path`: not trimmed before the cut, or the first path loses its first letter.
  const dirty = (git('status', '--porcelain', '--', 'src', 'routes') ?? '').split('\n').filter(Boolean).map((l) => l.slice(3))
  return { commit, subject: git('log', '-1', '--format=%s')?.trim() ?? '', dirty }
}

function template (): string {
  return readFileSync(join(ROOT, 'bench', 'benchmarks.template.md'), 'utf8')
}

function writeDocs (results: BenchResults): void {
  const docPath = join(ROOT, 'docs', 'benchmarks.md')
  const existing = existsSync(docPath) ? readFileSync(docPath, 'utf8') : undefined
  writeFileSync(docPath, spliceDoc(existing, markdownResults(results), template()))
  writeFileSync(join(ROOT, 'docs', 'benchmarks.svg'), svgReport(results))
  process.stderr.write(`wrote ${relative(process.cwd(), docPath)} and docs/benchmarks.svg\n`)
}

async function main (): Promise<number> {
  const code = await reexecWithFds()
  if (code !== undefined) return code
  const args = parseArgs(process.argv.slice(2))
  if (args.report !== undefined) {
    const saved = JSON.parse(readFileSync(args.report, 'utf8')) as BenchResults
    process.stdout.write(consoleReport(saved) + '\n')
    if (args.writeDocs || !args.quick) writeDocs(saved)
    return 0
  }
  const lim = fdLimits()
  const m = machine(lim)
  const notes: string[] = []
  let peers = PEERS.filter((p) => args.peers.includes(p.id))
  if (!hasRedis()) {
    const skipped = peers.filter((p) => p.redis).map((p) => p.id)
    if (skipped.length > 0) notes.push(`redis-server is not on PATH: skipped ${skipped.join(', ')}`)
    peers = peers.filter((p) => !p.redis)
  }
  if (m.connectionCap < 20_000) notes.push(`The open-files hard limit (${m.fdHard}) cannot be raised here, so one server process cannot hold 20,000 sockets: scenarios 3 and 4 ran with ${m.connectionCap.toLocaleString('en-US')} connections.`)
  const logDir = mkdtempSync(join(tmpdir(), 'herald-bench-'))
  const results: BenchResults = {
    mode: args.quick ? 'quick' : 'full',
    startedAt: new Date().toISOString(),
    finishedAt: '',
    command: 'npm run bench' + (process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''),
    machine: m,
    conditions: { loadavgStart: loadavg(), loadavgEnd: [], notes },
    herald: heraldVersion(),
    results: []
  }
  let interrupted = false
  const onSignal = (): void => {
    if (interrupted) process.exit(130)
    interrupted = true
    process.stderr.write('\nbench: interrupted; stopping the current server (again to force)\n')
    void stopActive().finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const t0 = Date.now()
  const scenarios = SCENARIOS.filter((s) => args.only.includes(s.id))
  // Full runs: a fresh server (and redis-server) for every (scenario, server), servers interleaved per scenario.
  // Quick runs: one server per peer for all its scenarios (faster; the memory figure is then only indicative).
  // Scenarios 1 and 8 in rounds, the servers in a rotated order each round (lib/rounds.ts); fresh runs only.
  const rounds = args.fresh ? args.rounds ?? (args.quick ? 1 : 3) : 1
  const plan: Array<{ sc: ScenarioDef, peer: PeerDef, round: number }> = []
  if (args.fresh) {
    for (const sc of scenarios) {
      const these = peers.filter((p) => sc.peers.includes(p.id))
      const n = FLOOR_SCENARIOS.includes(sc.id) ? rounds : 1
      for (let round = 0; round < n; round++) for (const peer of rotated(these, round)) plan.push({ sc, peer, round })
    }
  } else {
    for (const peer of peers) for (const sc of scenarios.filter((x) => x.peers.includes(peer.id))) plan.push({ sc, peer, round: 0 })
  }
  const ran: Array<{ r: RunResult, round: number }> = []
  const floors: FloorResult[] = []
  let shared: { peer: PeerId, started: Started } | undefined
  for (let i = 0; i < plan.length; i++) {
    const { sc, peer, round } = plan[i]
    const size = sc.size(args.quick, m.connectionCap)
    if (args.rate !== undefined && size.rate > 0) size.rate = args.rate
    if (args.mix !== undefined && sc.id === 'mixed') size.mix = args.mix
    const inRounds = FLOOR_SCENARIOS.includes(sc.id) && rounds > 1
    const tag = `[S${sc.number}${inRounds ? ` round ${round + 1}/${rounds}` : ''} ${peer.id}]`
    // The floor under the CPU-per-delivery targets, measured once per such scenario and round, just before its first server.
    if (args.floor && FLOOR_SCENARIOS.includes(sc.id) && plan.findIndex((x) => x.sc.id === sc.id && x.round === round) === i) {
      // One write per delivery: the scenario's publishes times the subscriptions of each room.
      const writesPerSec = size.rate * size.connections * (size.subsPerConn ?? 1) / size.rooms
      process.stderr.write(`\n[S${sc.number} floor] bench/floor.ts: a plain net server, ${size.connections} sockets, ${writesPerSec} writes/s\n`)
      const floor = await runFloor(sc, size, writesPerSec, logDir)
      if (typeof floor === 'string') notes.push(`S${sc.number} floor: ${floor}`)
      else floors.push(floor)
      process.stderr.write(`[S${sc.number} floor] ${typeof floor === 'string' ? 'FAILED: ' + floor : `${floor.serverUs.toFixed(2)} µs CPU per write at ${floor.perSec}/s`}\n`)
      await sleep(args.quick ? 200 : 2000)
    }
    process.stderr.write(`\n${tag} ${sc.title}: ${size.connections} connections, ${size.rooms} rooms` + (size.rate > 0 ? `, ${size.rate} events/s` : '') + '\n')
    let r: RunResult
    try {
      if (!args.fresh && shared?.peer !== peer.id) {
        await stopActive()
        shared = { peer: peer.id, started: await startPeer(peer, 'quick', logDir, args.profile.includes(peer.id)) }
      }
      // A hard cap per (scenario, server): past it the server and generator are stopped and the run is recorded as failed.
      let capTimer: NodeJS.Timeout | undefined
      const cap = new Promise<RunResult>((resolve) => {
        capTimer = setTimeout(() => {
          void stopActive().then(() => {
            shared = undefined
            resolve({ scenario: sc.id, peer: peer.id, ok: false, error: `hard cap of ${size.capSeconds + 60}s reached`, seconds: size.capSeconds + 60, connections: size.connections, ready: 0, failed: 0, warnings: [] })
          })
        }, (size.capSeconds + 60) * 1000)
      })
      r = await Promise.race([runOne(sc, peer, size, args.quick, args.profile.includes(peer.id), logDir, args.fresh ? undefined : shared?.started), cap])
      clearTimeout(capTimer)
    } catch (err) {
      r = { scenario: sc.id, peer: peer.id, ok: false, error: (err as Error).message, seconds: 0, connections: size.connections, ready: 0, failed: 0, warnings: [] }
      await stopActive()
      shared = undefined
    }
    ran.push({ r, round })
    process.stderr.write(`${tag} ${r.ok ? 'done' : 'FAILED: ' + (r.error ?? '')} in ${r.seconds.toFixed(1)}s` +
      (r.latency !== undefined ? `; p50 ${r.latency.p50} p99 ${r.latency.p99} ms` : '') +
      (r.maxSustainedPerSec != null ? `; max ${Math.round(r.maxSustainedPerSec)}/s` : '') +
      (r.rssPerConnectionBytes != null ? `; ${(r.rssPerConnectionBytes / 1024).toFixed(1)} KiB/conn` : '') +
      (sc.id === 'storm' && r.allSubscribedMs !== undefined ? `; all subscribed in ${(r.allSubscribedMs / 1000).toFixed(2)}s` : '') + '\n')
    if (args.fresh) await sleep(args.quick ? 200 : 2000)
  }
  await stopActive()
  // One result per (scenario, server): the median round where there were rounds.
  for (const sc of scenarios) {
    for (const peer of PEERS) {
      const runs = ran.filter((x) => x.r.scenario === sc.id && x.r.peer === peer.id).sort((a, b) => a.round - b.round).map((x) => x.r)
      if (runs.length > 0) results.results.push(combineRounds(runs))
    }
    const f = floors.filter((x) => x.scenario === sc.id)
    if (f.length > 0) (results.floor ??= []).push(combineFloors(f))
  }
  results.finishedAt = new Date().toISOString()
  results.conditions.loadavgEnd = loadavg()
  mkdirSync(RESULTS_DIR, { recursive: true })
  const out = args.out ?? args.merge ?? join(RESULTS_DIR, args.quick ? 'quick.json' : 'full.json')
  let final = results
  if (args.merge !== undefined) {
    const base = JSON.parse(readFileSync(args.merge, 'utf8')) as BenchResults
    const redone = (x: RunResult): boolean => results.results.some((y) => y.scenario === x.scenario && y.peer === x.peer)
    const order = (x: RunResult): number => SCENARIOS.findIndex((s) => s.id === x.scenario) * 10 + PEERS.findIndex((p) => p.id === x.peer)
    final = {
      ...base,
      results: [...base.results.filter((x) => !redone(x)), ...results.results].sort((a, b) => order(a) - order(b)),
      floor: [...(base.floor ?? []).filter((f) => results.floor?.some((g) => g.scenario === f.scenario) !== true), ...(results.floor ?? [])],
      conditions: {
        ...base.conditions,
        notes: [...base.conditions.notes, `${[...new Set(results.results.map((r) => 'S' + String(SCENARIOS.find((s) => s.id === r.scenario)!.number)))].join(', ')} (${[...new Set(results.results.map((r) => r.peer))].join(', ')}) re-run ${results.startedAt} → ${results.finishedAt} (\`${results.command}\`), load average ${results.conditions.loadavgStart.map((v) => v.toFixed(2)).join(' / ')} at its start.`]
      }
    }
  }
  writeFileSync(out, JSON.stringify(final, null, 1))
  process.stdout.write(consoleReport(final) + '\n')
  process.stdout.write(`\n${ran.length} runs in ${((Date.now() - t0) / 1000).toFixed(0)}s; results in ${relative(process.cwd(), out)}\n`)
  if (args.writeDocs) writeDocs(final)
  if (args.profile.length > 0) {
    const dir = join(RESULTS_DIR, 'profiles')
    const files = existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String).filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f)) : []
    process.stdout.write(`CPU profiles (main threads) in ${relative(process.cwd(), dir)}:\n${files.map((f) => '  ' + f).join('\n')}\n  summarise with: npx tsx bench/profile-top.ts <file>\n`)
  }
  rmSync(logDir, { recursive: true, force: true })
  return results.results.every((r) => r.ok) ? 0 : 1
}

main().then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`bench: ${String((err as Error).stack ?? err)}\n`)
  void stopActive().finally(() => { process.exitCode = 1 })
})

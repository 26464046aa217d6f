/**
 * Soak benchmark: one Herald process on a private redis-server, under continuous churn for --duration seconds
 * (WebSocket, SSE and long-poll clients that come and go and resume, a steady REST publisher, slow readers that
 * must be evicted), sampled every 10 s: RSS, heap, open descriptors, connections, Redis keys and the load's own
 * counters. At the end it stops what it started (by PID), writes docs/soak.md and docs/soak.svg and prints a summary.
 *
 *   npm run soak                          10 minutes
 *   npm run soak -- --duration 60 --seed 42
 *   npm run soak -- --help
 *
 * It builds nothing: it runs dist/src/server.js when that is newer than the sources, else src/server.ts with tsx.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, hasRedis, spawnWithFds, startRedis, stopChild, waitHttp, type Managed } from './lib/procs.js'
import { SoakLoad, errorTotal, type LoadConfig, type SoakCounters } from './lib/soak-load.js'
import { randomSeed } from './lib/soak-rng.js'
import { heraldEntry, logFindings, readServer, type ServerReading } from './lib/soak-server.js'
import { clientConnections, f1, int, mdTable, mib, sampleRows, soakSvg, textTable, trends, type Sample, type Trend } from './lib/soak-report.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SECRET = 'soak-secret-0123456789abcdef-' + String(process.pid)

interface Args {
  duration: number
  seed: number
  seedGiven: boolean
  warmup?: number
  sample: number
  rate: number
  ws: number
  wsSlow: number
  sse: number
  sseSlow: number
  poll: number
  out: string
}

const USAGE = `usage: npm run soak -- [options]
  --duration <s>   how long the load runs (default 600)
  --seed <n>       PRNG seed (default: from the clock; printed, and written to the report)
  --warmup <s>     samples before this are left out of the verdict (default 60, or a third of a run shorter than 180 s)
  --sample <s>     seconds between samples (default 10)
  --rate <n>       REST publishes per second (default 300)
  --ws <n>         WebSocket client slots (default 120)     --ws-slow <n>   slow WebSocket readers (default 8)
  --sse <n>        SSE client slots (default 30)            --sse-slow <n>  slow SSE readers (default 4)
  --poll <n>       long-poll loops (default 20)
  --out <dir>      where soak.md and soak.svg go (default docs/)`

function parseArgs (argv: string[]): Args {
  const a: Args = { duration: 600, seed: randomSeed(), seedGiven: false, sample: 10, rate: 300, ws: 120, wsSlow: 8, sse: 30, sseSlow: 4, poll: 20, out: join(ROOT, 'docs') }
  const num = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v)
    if (v === undefined || !Number.isFinite(n) || n < min || n > max) throw new Error(`${name} wants a number from ${min} to ${max}, got ${String(v)}`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    const v = (): string | undefined => argv[++i]
    switch (k) {
      case '--duration': a.duration = Math.round(num(k, v(), 10, 7 * 24 * 3600)); break
      case '--seed': a.seed = num(k, v(), 0, 4294967295) >>> 0; a.seedGiven = true; break
      case '--warmup': a.warmup = num(k, v(), 0, 24 * 3600); break
      case '--sample': a.sample = num(k, v(), 1, 3600); break
      case '--rate': a.rate = num(k, v(), 0, 5000); break
      case '--ws': a.ws = Math.round(num(k, v(), 0, 5000)); break
      case '--ws-slow': a.wsSlow = Math.round(num(k, v(), 0, 500)); break
      case '--sse': a.sse = Math.round(num(k, v(), 0, 2000)); break
      case '--sse-slow': a.sseSlow = Math.round(num(k, v(), 0, 500)); break
      case '--poll': a.poll = Math.round(num(k, v(), 0, 1000)); break
      case '--out': { const d = v(); if (d === undefined) throw new Error('--out wants a directory'); a.out = d; break }
      case '--help': case '-h': process.stdout.write(USAGE + '\n'); process.exit(0); break
      default: throw new Error(`unknown option ${k}\n${USAGE}`)
    }
  }
  return a
}

async function sleep (ms: number): Promise<void> { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** The Herald under test: commit and the files of src/ and routes/ that differ from it (read-only git queries). */
function heraldVersion (): { commit: string, subject: string, dirty: string[] } | undefined {
  const git = (...args: string[]): string | undefined => {
    const r = spawnSync('git', ['--no-optional-locks', ...args], { cwd: ROOT, encoding: 'utf8' })
    return r.status === 0 ? r.stdout.trim() : undefined
  }
  const commit = git('rev-parse', 'HEAD')
  if (commit === undefined) return undefined
  // Porcelain lines are `XY path`; the whole output was trimmed, so the first may have lost its leading blank.
  const dirty = (git('status', '--porcelain', '--', 'src', 'routes') ?? '').split('\n').filter(Boolean).map((l) => l.replace(/^\s*\S{1,2}\s+/, ''))
  return { commit, subject: git('log', '-1', '--format=%s') ?? '', dirty }
}

function toolVersion (cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  return (r.stdout ?? '').trim().split('\n')[0] ?? '?'
}

// ---------------------------------------------------------------- the run

interface RunResult {
  args: Args
  warmup: number
  startedAt: Date
  entry: ReturnType<typeof heraldEntry>
  env: Record<string, string>
  plan: string
  samples: Sample[]
  final: SoakCounters
  loadSeconds: number
  crash?: string
  interrupted: boolean
  heraldExit?: string
  heraldStopMs?: number
  logDir: string
  heraldLog: string
  findings: ReturnType<typeof logFindings>
  redisVersion: string
  version?: { commit: string, subject: string, dirty: string[] }
}

const started: Managed[] = []
let interrupted = false
let sigints = 0

async function stopAll (): Promise<void> {
  for (const m of started.reverse()) await m.stop().catch(() => {})
  started.length = 0
}

process.on('SIGINT', () => {
  sigints++
  interrupted = true
  if (sigints === 1) { process.stderr.write('\nsoak: interrupted; stopping the load and writing what was measured (Ctrl-C again to quit at once)\n'); return }
  for (const m of started) { try { m.proc.kill('SIGKILL') } catch {} }
  process.exit(130)
})
process.on('SIGTERM', () => { interrupted = true })

async function run (args: Args): Promise<RunResult> {
  const warmup = args.warmup ?? (args.duration >= 180 ? 60 : Math.round(args.duration / 3 / args.sample) * args.sample)
  const logDir = mkdtempSync(join(tmpdir(), 'herald-soak-'))
  const entry = heraldEntry(ROOT)
  const version = heraldVersion()
  const startedAt = new Date()
  process.stdout.write(`soak: seed ${args.seed}, ${args.duration} s of load (warm-up ${warmup} s), a sample every ${args.sample} s; logs in ${logDir}\n`)
  if (version !== undefined) process.stdout.write(`soak: commit ${version.commit.slice(0, 10)}${version.dirty.length > 0 ? ` + uncommitted changes in ${version.dirty.length} files of src/ and routes/` : ''}\n`)
  process.stdout.write(`soak: Herald from ${entry.kind === 'built' ? 'dist/src/server.js' : 'src/server.ts through tsx'} (${entry.why})\n`)

  const redis = await startRedis(logDir)
  started.push(redis)
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const env: Record<string, string> = {
    PORT: String(port),
    HOST: '127.0.0.1',
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    JWT_SECRET: SECRET,
    REDIS_URL: redis.url,
    REDIS_PREFIX: 'soak',
    // Small limits, so that churn reaches them: slow readers are evicted at 256 KiB, history and idempotency
    // keys turn over within the run.
    MAX_BUFFER_BYTES: '262144',
    HISTORY_SIZE: '200',
    IDEMPOTENCY_TTL: '60',
    // Not the limits under test: the load's few token subjects would otherwise be refused.
    MAX_CONNECTIONS_PER_SUB: '2000',
    RATE_LIMIT_MAX: '10000000',
    DRAIN_TIMEOUT: '5'
  }
  const herald = spawnWithFds('herald', [process.execPath, ...entry.args], env, ROOT, logDir)
  started.push(herald)
  let crash: string | undefined
  let stopping = false
  herald.proc.once('exit', (code, signal) => {
    if (!stopping && !interrupted) crash = `Herald (PID ${herald.pid}) exited during the run: code ${String(code)}, signal ${String(signal)}`
  })
  await waitHttp(base + '/readyz', herald.proc, 60_000)
  process.stdout.write(`soak: redis-server PID ${redis.pid} on port ${redis.port}; Herald PID ${herald.pid} on ${base}\n`)

  const cfg: LoadConfig = {
    base,
    secret: SECRET,
    seed: args.seed,
    channels: 200,
    hot: 10,
    hotShare: 0.4,
    rate: args.rate,
    payloadBytes: 1024,
    ws: args.ws,
    wsSlow: args.wsSlow,
    sse: args.sse,
    sseSlow: args.sseSlow,
    poll: args.poll,
    tokenTtlMs: (args.duration + 3600) * 1000
  }
  const load = new SoakLoad(cfg)
  const samples: Sample[] = []
  let prevCpu: { at: number, cpu: number } | undefined
  const take = async (t: number, phase: Sample['phase']): Promise<Sample> => {
    const server: ServerReading = await readServer(herald.pid, base, redis.port)
    const now = Date.now()
    let cpuPct: number | undefined
    if (server.cpuSeconds !== undefined) {
      if (prevCpu !== undefined && now > prevCpu.at) cpuPct = (server.cpuSeconds - prevCpu.cpu) / ((now - prevCpu.at) / 1000) * 100
      prevCpu = { at: now, cpu: server.cpuSeconds }
    }
    const s: Sample = { t, phase, server, cpuPct, counters: load.snapshot(), window: phase === 'idle' ? undefined : load.window() }
    samples.push(s)
    const c = s.counters
    process.stdout.write(`  t=${String(Math.round(t)).padStart(5)}s ${phase.padEnd(5)} RSS ${f1(mib(server.rssBytes)).padStart(6)} MiB  heap ${f1(mib(server.heapUsedBytes)).padStart(6)} MiB  fds ${int(server.fds).padStart(5)}  ` +
      `conns ws/sse/poll ${int(server.connections.websocket)}/${int(server.connections.sse)}/${int(server.connections['long-poll'])}  keys ${int(server.redisKeys)}  ` +
      `cpu ${f1(cpuPct, 0)}%  loop p99 ${f1(server.lagP99Ms, 0)} ms  pub p99 ${f1(s.window?.pubP99Ms, 0)} ms  opened ${int(c.wsOpened + c.sseOpened)}  evicted ${int(c.evictionsSeen)}  rx ${int(c.events.websocket + c.events.sse + c.events['long-poll'])}  pub ${int(c.publishOk)}/${int(c.publishFailed)}  err ${int(errorTotal(c))}\n`)
    return s
  }

  await take(0, 'idle')
  process.stdout.write(`soak: load: ${load.plan}\n`)
  const t0 = Date.now()
  load.start()
  for (let k = 1; k * args.sample <= args.duration; k++) {
    const at = t0 + k * args.sample * 1000
    while (Date.now() < at && crash === undefined && !interrupted) await sleep(Math.min(250, at - Date.now()))
    if (crash !== undefined || interrupted) break
    await take((Date.now() - t0) / 1000, 'load')
  }
  const loadSeconds = (Date.now() - t0) / 1000
  process.stdout.write('soak: stopping the load\n')
  await load.stop(15_000)
  const final = load.snapshot()

  // After the load: every client gone; long-poll sessions linger POLL_LINGER (10 s) before they end.
  const heraldUp = (): boolean => herald.proc.exitCode === null && herald.proc.signalCode === null
  if (crash === undefined && heraldUp()) {
    for (const wait of [5, 15]) {
      const at = t0 + (loadSeconds + wait) * 1000
      while (Date.now() < at && crash === undefined && sigints < 2) await sleep(Math.min(250, Math.max(1, at - Date.now())))
      if (crash !== undefined || !heraldUp()) break
      await take((Date.now() - t0) / 1000, 'after')
    }
  }

  stopping = true
  let heraldExit: string | undefined
  let heraldStopMs: number | undefined
  if (crash === undefined && heraldUp()) {
    const t = Date.now()
    await stopChild(herald.proc, 15_000)
    heraldStopMs = Date.now() - t
    heraldExit = herald.proc.signalCode !== null ? `signal ${herald.proc.signalCode}` : `exit code ${String(herald.proc.exitCode)}`
  }
  await stopAll()
  return {
    args,
    warmup,
    startedAt,
    entry,
    env,
    plan: load.plan,
    samples,
    final,
    loadSeconds,
    crash,
    interrupted,
    heraldExit,
    heraldStopMs,
    logDir,
    heraldLog: herald.log,
    findings: logFindings(herald.log),
    redisVersion: toolVersion('redis-server', ['--version']),
    version
  }
}

// ---------------------------------------------------------------- report

function trendLine (t: Trend): string {
  if (t.verdict === 'no data') return `${t.name}: no data`
  const u = t.unit
  return `${t.name}: ${t.verdict} — baseline ${f1(t.baseline)} ${u}, second-half mean ${f1(t.secondHalfMean)} ${u} ` +
    `(${t.delta >= 0 ? '+' : ''}${f1(t.delta)} ${u}), slope ${t.slopePerMin >= 0 ? '+' : ''}${f1(t.slopePerMin, 2)} ${u}/min`
}

function lastSampleWithMetrics (r: RunResult): Sample | undefined {
  return [...r.samples].reverse().find((s) => s.server.metricsOk)
}

function observations (r: RunResult, list: Trend[]): string[] {
  const notes: string[] = []
  const c = r.final
  const last = r.samples[r.samples.length - 1]
  const idle = r.samples.find((s) => s.phase === 'idle')
  if (r.crash !== undefined) notes.push(`**Herald crashed**: ${r.crash}. The tail of its log is in ${r.heraldLog}.`)
  if (r.interrupted) notes.push('The run was interrupted (SIGINT/SIGTERM) before its planned duration.')
  if (r.heraldExit !== undefined && r.heraldExit !== 'exit code 0') notes.push(`Herald did not exit cleanly on SIGTERM: ${r.heraldExit} after ${r.heraldStopMs ?? '?'} ms.`)
  if (c.gaps > 0) notes.push(`Offset gaps seen by clients: ${c.gaps} (${c.gapEvents} events missing) — a subscription skipped offsets without a recovered: false.`)
  if (c.dups > 0) notes.push(`Duplicate or reordered events seen by clients: ${c.dups}.`)
  if (c.resumeMismatch > 0) notes.push(`Resumes answered recovered: true from another position than asked: ${c.resumeMismatch}.`)
  if (last !== undefined && last.phase === 'after') {
    const conns = clientConnections(last)
    if (conns > 0 || (last.server.subscriptions ?? 0) > 0 || (last.server.channels ?? 0) > 0) {
      notes.push(`After every client had gone (${Math.round(last.t - r.loadSeconds)} s after the load), Herald still reported ${conns} connections, ` +
        `${int(last.server.subscriptions)} subscriptions and ${int(last.server.channels)} channels.`)
    }
    if (idle?.server.fds !== undefined && last.server.fds !== undefined && last.server.fds > idle.server.fds + 10) {
      notes.push(`Open descriptors after the load: ${last.server.fds}, against ${idle.server.fds} before it.`)
    }
  }
  const ev = lastSampleWithMetrics(r)?.server.evictions ?? {}
  const serverEvicted = Object.entries(ev).filter(([k]) => k.endsWith('/disconnect')).reduce((a, [, v]) => a + v, 0)
  if (c.slowPaused > 0 && serverEvicted === 0) notes.push(`${c.slowPaused} slow readers paused but Herald evicted none (herald_evictions_total).`)
  const wsEv = ev['websocket/disconnect'] ?? 0
  const sseEv = ev['sse/disconnect'] ?? 0
  if (wsEv + sseEv > c.evictionsSeen) {
    notes.push(`Herald evicted ${wsEv} WebSockets and ${sseEv} SSE streams (herald_evictions_total), but clients saw the 4001 close code / disconnect message only ` +
      `${c.wsEvictionsSeen} and ${c.sseEvictionsSeen} times; ${c.slowCut} slow readers found their connection cut without it. The close frame (or SSE disconnect message) ` +
      'is queued behind the backlog the client is not reading, and Herald destroys the socket 2 s later (CLOSE_GRACE_MS / END_GRACE_MS), so a reader that is really stalled ' +
      'usually sees an abnormal close (1006 / an aborted stream) rather than 4001.')
  }
  if ((ev['long-poll/disconnect'] ?? 0) > 0) {
    notes.push(`${ev['long-poll/disconnect']} long-poll sessions were evicted: a session gathers events between polls (and lingers POLL_LINGER after one), ` +
      'and one that gathered more than MAX_BUFFER_BYTES (256 KiB here) for a poller that was slow to come back, or had abandoned its cursor, is ended; the next poll resumes from history.')
  }
  if (c.publishSkippedInFlight > 0) notes.push(`${c.publishSkippedInFlight} publishes were not sent because 256 were already waiting for an answer (see the pub p99 column and the load process's event-loop delay).`)
  const unexpected = Object.entries(c.errors).filter(([k]) => !/^ws socket: |^sse stream/.test(k))
  if (unexpected.length > 0) notes.push('Client-side errors: ' + unexpected.sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ×${v}`).join('; ') + '.')
  const errLogs = r.findings.filter((f) => f.level === 'error' || f.level === 'fatal' || f.level === 'text')
  if (errLogs.length > 0) notes.push(`Herald logged ${errLogs.reduce((a, f) => a + f.count, 0)} error-level (or non-JSON) lines; see "Herald's log" below.`)
  const post = r.samples.filter((s) => s.phase === 'load' && s.t >= r.warmup)
  const span = post.length > 1 ? post[post.length - 1].t - post[0].t : 0
  for (const t of list) {
    if (t.verdict !== 'growing') continue
    if (span < 300) notes.push(`${t.name} rose over the ${Math.round(span)} s after the warm-up (${trendLine(t)}); too short a span to tell a leak from warm-up.`)
    else notes.push(`${t.name} grew after the warm-up: ${trendLine(t)}.`)
  }
  return notes
}

function markdown (r: RunResult): string {
  const { post, list } = trends(r.samples, r.warmup)
  const a = r.args
  const c = r.final
  const last = r.samples[r.samples.length - 1]
  const lastLoad = [...r.samples].reverse().find((s) => s.phase === 'load')
  const idle = r.samples.find((s) => s.phase === 'idle')
  const span = post.length > 0 ? post[post.length - 1].t - post[0].t : 0
  const out: string[] = []
  out.push('# Herald soak run', '')
  out.push(`Generated by \`npm run soak\` (bench/soak.ts) on ${r.startedAt.toISOString()}; rerun it rather than editing this file.`, '')
  out.push('![RSS, heap, descriptors, Redis keys and connections over the run](soak.svg)', '')
  out.push('## What ran', '')
  out.push(`- Command: \`npm run soak -- --duration ${a.duration} --seed ${a.seed}${a.rate !== 300 ? ` --rate ${a.rate}` : ''}\` — seed **${a.seed}**${a.seedGiven ? '' : ' (from the clock)'}.`)
  out.push(`- Load: ran ${Math.round(r.loadSeconds)} s (planned ${a.duration} s); warm-up ${r.warmup} s; a sample every ${a.sample} s (${r.samples.length} samples: one idle before the load, ${r.samples.filter((s) => s.phase === 'load').length} under load, ${r.samples.filter((s) => s.phase === 'after').length} after it).`)
  out.push(`- Herald: one process, ${r.entry.kind === 'built' ? '`node dist/src/server.js`' : '`node --import tsx src/server.ts`'} (${r.entry.why}), Node ${process.version}, on a private ${r.redisVersion.replace(/^Redis server /, 'redis-server ')} (loopback, free port, no persistence).`)
  if (r.version !== undefined) {
    out.push(`- Code: commit \`${r.version.commit.slice(0, 10)}\` (${r.version.subject.replace(/\|/g, '/')})` +
      (r.version.dirty.length === 0 ? ', src/ and routes/ as committed.' : `, with uncommitted changes in ${r.version.dirty.length} files of src/ and routes/ (${r.version.dirty.slice(0, 8).join(', ')}${r.version.dirty.length > 8 ? ', …' : ''}).`))
  }
  out.push(`- Environment: ${Object.entries(r.env).filter(([k]) => !['PORT', 'JWT_SECRET', 'REDIS_URL'].includes(k)).map(([k, v]) => `\`${k}=${v}\``).join(', ')}, plus PORT, JWT_SECRET (HS256, tokens signed with fast-jwt) and REDIS_URL.`)
  out.push(`- Clients (one process, all to 127.0.0.1): ${r.plan}.`)
  out.push('  - WebSocket: connect (token in the header or `?token=`), subscribe to 1–5 of the channels, about 30% resuming some with `since` ' +
    '(positions left by earlier clients, or a few events back), ping now and then, some swap a subscription, stay 1 s–2.5 min, then close (80%) or drop the TCP connection (20%).')
  out.push('  - SSE: 1–3 channels, read 3–30 s, close, reconnect with `Last-Event-ID` (10% start afresh on new channels).')
  out.push('  - Long-poll: 1–3 channels, poll with the cursor in a loop (`timeout` 1–8 s), 5% abandon the cursor, 5% abort a waiting poll.')
  out.push('  - REST publish: steady rate, ~1 KiB `data`, 20% with an idempotency `id`, 2% retrying an acknowledged `id` (must answer `duplicate: true`).')
  out.push('  - Slow readers: WebSocket clients that subscribe to the 10 hot channels and 30–80 others (half of them replaying 50–180 events of the hot ones with `since`) ' +
    'and then pause their TCP socket (`socket._socket.pause()`); SSE readers on the hot channels and 5–20 others that stop reading (and reconnect with `Last-Event-ID`). ' +
    'After 15–40 s they read again and record how the connection ended. They take 150–250 KiB/s each, as loopback TCP buffers hold 4–6 MiB of a stopped reader before Herald sees any backlog.')
  out.push('')

  out.push('## Verdict', '')
  if (r.crash !== undefined) out.push(`**Herald crashed during the run**: ${r.crash}.`, '')
  out.push(`Computed over the ${post.length} samples after the ${r.warmup} s warm-up (${Math.round(span)} s): the baseline is the mean of the first ` +
    `${Math.min(3, Math.max(1, Math.floor(post.length / 4)))} of them, compared with the mean of the second half; the slope is a least-squares fit over all of them.`)
  if (span < 300) out.push(`The post-warm-up span is only ${Math.round(span)} s: too short to call a slow leak; the figures are indicative only.`)
  out.push('')
  out.push(mdTable(['figure', 'baseline', 'second-half mean', 'change', 'slope per minute', 'verdict'],
    list.map((t) => [t.name, `${f1(t.baseline)} ${t.unit}`, `${f1(t.secondHalfMean)} ${t.unit}`, `${t.delta >= 0 ? '+' : ''}${f1(t.delta)} ${t.unit}`, `${t.slopePerMin >= 0 ? '+' : ''}${f1(t.slopePerMin, 2)} ${t.unit}/min`, `**${t.verdict}**`]),
    ['l', 'r', 'r', 'r', 'r', 'l']))
  out.push('')
  for (const t of list) out.push(`- ${t.name}: ${t.rule}.`)
  out.push('- fds minus client connections: what Herald holds besides open WebSockets, SSE streams and waiting polls — the listening socket, its Redis connections, ' +
    'and the idle keep-alive HTTP sockets of the publisher (up to 16) and of the pollers between two polls.')
  out.push('- Redis keys include the idempotency keys, which live `IDEMPOTENCY_TTL` (60 s) and so rise for the first minute of publishing before they level off.')
  out.push('')
  if (idle !== undefined && last !== undefined && last.phase === 'after') {
    out.push(`Idle before the load vs ${Math.round(last.t - r.loadSeconds)} s after it (every client gone):`, '')
    out.push(mdTable(['', 'RSS MiB', 'heap MiB', 'fds', 'connections', 'subscriptions', 'channels', 'Redis keys'], [idle, last].map((s) => [
      s === idle ? 'before' : 'after', f1(mib(s.server.rssBytes)), f1(mib(s.server.heapUsedBytes)), int(s.server.fds), int(clientConnections(s)), int(s.server.subscriptions), int(s.server.channels), int(s.server.redisKeys)
    ]), ['l']))
    out.push('')
  }
  const notes = observations(r, list)
  out.push('Observations:', '')
  if (notes.length === 0) out.push('- Nothing odd: no crash, no offset gap or duplicate, no resume mismatch, no client-side error, clean exit on SIGTERM.')
  for (const n of notes) out.push('- ' + n)
  out.push('')

  out.push('## Samples', '')
  const { head, rows } = sampleRows(r.samples)
  out.push(mdTable(head, rows, ['r', 'l']))
  out.push('')
  out.push('t: seconds since the load started (phase idle: before it, after: once it stopped). RSS from /proc/<pid>/status; heap: ' +
    `${r.samples.find((s) => s.server.heapSource !== undefined)?.server.heapSource ?? 'n/a'} from /metrics; fds: entries of /proc/<pid>/fd; ws/sse/poll: herald_connections; ` +
    'subs: herald_subscriptions; Redis keys: DBSIZE; CPU: Herald\'s, % of one core since the previous sample; loop p99: Herald\'s event-loop delay (herald_nodejs_eventloop_lag_p99_seconds); pub p99: REST publish round trip seen by the load over the interval. The other columns are the load\'s own cumulative counters ' +
    '(connections opened/closed are WebSocket + SSE; events rx over all transports; errors: everything in the client error table below).')
  out.push('')

  out.push('## Client counters (whole run)', '')
  out.push(mdTable(['counter', 'value'], [
    ['WebSocket opened / closed / failed to connect', `${int(c.wsOpened)} / ${int(c.wsClosed)} / ${int(c.wsConnectFailed)}`],
    ['SSE opened / closed / failed to connect', `${int(c.sseOpened)} / ${int(c.sseClosed)} / ${int(c.sseConnectFailed)}`],
    ['long-polls sent / answered / failed / aborted by the client', `${int(c.polls)} / ${int(c.pollsOk)} / ${int(c.pollsFailed)} / ${int(c.pollsAborted)}`],
    ['events received (WebSocket / SSE / long-poll)', `${int(c.events.websocket)} / ${int(c.events.sse)} / ${int(c.events['long-poll'])}`],
    ['publishes OK (of which duplicates) / failed / not sent: 256 in flight / load process stalled > 1 s', `${int(c.publishOk)} (${int(c.publishDuplicate)}) / ${int(c.publishFailed)} / ${int(c.publishSkippedInFlight)} / ${int(c.publishSkipped)}`],
    ['publish round trip over the run: worst interval p99 / worst single', `${f1(Math.max(...r.samples.map((s) => s.window?.pubP99Ms ?? 0)), 0)} ms / ${f1(Math.max(...r.samples.map((s) => s.window?.pubMaxMs ?? 0)), 0)} ms`],
    ['load process event-loop delay p99, worst interval', `${f1(Math.max(...r.samples.map((s) => s.window?.clientLagP99Ms ?? 0)), 0)} ms`],
    ['evictions seen (WebSocket 4001 / SSE disconnect 4001)', `${int(c.wsEvictionsSeen)} / ${int(c.sseEvictionsSeen)}`],
    ['slow readers paused → evicted (4001 seen) / cut without a 4001 / still open when they read again / still paused when the load stopped', `${int(c.slowPaused)} → ${int(c.slowEvicted)} / ${int(c.slowCut)} / ${int(c.slowSurvived)} / ${int(c.slowUnfinished)}`],
    ['resumes (since / Last-Event-ID / poll recovery) recovered / not recovered / position mismatch', `${int(c.resumes)}: ${int(c.resumeRecovered)} / ${int(c.resumeNotRecovered)} / ${int(c.resumeMismatch)}`],
    ['not recovered, by reason', Object.entries(c.notRecoveredReasons).map(([k, v]) => `${k} ×${v}`).join(', ') || '–'],
    ['offset gaps (events missing) / duplicates', `${int(c.gaps)} (${int(c.gapEvents)}) / ${int(c.dups)}`],
    ['close codes', Object.entries(c.closeCodes).sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ×${v}`).join(', ') || '–']
  ], ['l']))
  out.push('')
  const errs = Object.entries(c.errors).sort((x, y) => y[1] - x[1])
  out.push(errs.length === 0 ? 'No client-side errors.' : mdTable(['client-side error', 'count'], errs.map(([k, v]) => [k.replace(/\|/g, '\\|'), int(v)]), ['l']))
  out.push('')

  const sv = lastLoad?.server
  out.push('## Server totals (herald /metrics at the last sample under load)', '')
  if (sv !== undefined) {
    out.push(mdTable(['metric', 'value'], [
      ['herald_events_published_total', int(sv.published)],
      ['herald_events_delivered_total', int(sv.delivered)],
      ['herald_evictions_total (transport/reason)', Object.entries(sv.evictions).map(([k, v]) => `${k} ×${v}`).join(', ') || '0'],
      ['herald_heartbeat_timeouts_total', int(sv.heartbeatTimeouts)],
      ['herald_errors_total (code)', Object.entries(sv.errorsByCode).sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ×${v}`).join(', ') || '0'],
      ['event-loop lag p99 (last sample)', `${f1(sv.lagP99Ms)} ms`],
      ['Redis used_memory (last sample)', `${f1(mib(sv.redisUsedBytes))} MiB`]
    ], ['l']))
  }
  out.push('')
  out.push(`Herald's stop: ${r.heraldExit ?? 'n/a'}${r.heraldStopMs !== undefined ? ` after ${r.heraldStopMs} ms (SIGTERM, DRAIN_TIMEOUT=5)` : ''}.`, '')

  out.push('## Herald\'s log (warn and above)', '')
  if (r.findings.length === 0) out.push('Nothing at warn level or above.')
  else out.push(mdTable(['level', 'message', 'count'], r.findings.slice(0, 20).map((f) => [f.level, '`' + f.msg.replace(/\|/g, '\\|').replace(/`/g, "'") + '`', int(f.count)]), ['l', 'l']))
  out.push('')
  return out.join('\n')
}

function summary (r: RunResult): string {
  const { list } = trends(r.samples, r.warmup)
  const c = r.final
  const last = r.samples[r.samples.length - 1]
  const lines: string[] = []
  lines.push('', `Herald soak — seed ${r.args.seed}, ${Math.round(r.loadSeconds)} s of load (warm-up ${r.warmup} s), ${r.samples.length} samples`)
  if (r.crash !== undefined) lines.push('!! ' + r.crash)
  lines.push(textTable([
    ['figure', 'baseline', '2nd-half mean', 'slope/min', 'verdict'],
    ...list.map((t) => [t.name, `${f1(t.baseline)} ${t.unit}`, `${f1(t.secondHalfMean)} ${t.unit}`, `${t.slopePerMin >= 0 ? '+' : ''}${f1(t.slopePerMin, 2)}`, t.verdict])
  ], ['l']))
  lines.push(`connections: ws ${int(c.wsOpened)} opened / ${int(c.wsClosed)} closed, sse ${int(c.sseOpened)} / ${int(c.sseClosed)}, polls ${int(c.polls)} (${int(c.pollsFailed)} failed)`)
  lines.push(`events received: ws ${int(c.events.websocket)}, sse ${int(c.events.sse)}, poll ${int(c.events['long-poll'])}; publishes ${int(c.publishOk)} ok, ${int(c.publishFailed)} failed, ${int(c.publishSkippedInFlight + c.publishSkipped)} not sent`)
  lines.push(`slow readers: ${int(c.slowPaused)} paused → ${int(c.slowEvicted)} saw 4001, ${int(c.slowCut)} cut otherwise, ${int(c.slowSurvived)} survived, ${int(c.slowUnfinished)} unfinished; evictions seen ${int(c.evictionsSeen)}; ` +
    `server evictions ${Object.entries(last?.server.evictions ?? {}).map(([k, v]) => `${k} ${v}`).join(', ') || '0'}`)
  lines.push(`resumes ${int(c.resumes)} (${int(c.resumeRecovered)} recovered, ${int(c.resumeNotRecovered)} not, ${int(c.resumeMismatch)} mismatched); gaps ${int(c.gaps)}, duplicates ${int(c.dups)}; client errors ${int(errorTotal(c))}`)
  if (last?.phase === 'after') lines.push(`after the load: ${int(clientConnections(last))} connections, ${int(last.server.subscriptions)} subscriptions, ${int(last.server.fds)} fds, RSS ${f1(mib(last.server.rssBytes))} MiB`)
  lines.push(`Herald stop: ${r.heraldExit ?? 'n/a'}${r.heraldStopMs !== undefined ? ` in ${r.heraldStopMs} ms` : ''}; log findings (warn+): ${r.findings.reduce((a, f) => a + f.count, 0)} lines; logs in ${r.logDir}`)
  return lines.join('\n') + '\n'
}

async function main (): Promise<number> {
  let args: Args
  try { args = parseArgs(process.argv.slice(2)) } catch (err) { process.stderr.write((err as Error).message + '\n'); return 64 }
  if (!hasRedis()) { process.stderr.write('soak: redis-server is not on PATH (apt-get install redis-server)\n'); return 69 }
  // A backstop: whatever happens, nothing this process started outlives it by much.
  const backstop = setTimeout(() => {
    process.stderr.write('soak: overran its time budget; stopping everything\n')
    for (const m of started) { try { m.proc.kill('SIGKILL') } catch {} }
    process.exit(1)
  }, (args.duration + 300) * 1000)
  backstop.unref()
  let r: RunResult
  try {
    r = await run(args)
  } catch (err) {
    process.stderr.write('soak: ' + String((err as Error).stack ?? err) + '\n')
    await stopAll()
    return 1
  }
  mkdirSync(args.out, { recursive: true })
  const md = join(args.out, 'soak.md')
  const svg = join(args.out, 'soak.svg')
  writeFileSync(md, markdown(r))
  writeFileSync(svg, soakSvg(r.samples, r.warmup, Math.max(r.args.duration, Math.ceil(r.loadSeconds)), `Herald soak: ${Math.round(r.loadSeconds)} s, seed ${r.args.seed}`))
  process.stdout.write(summary(r))
  process.stdout.write(`wrote ${relative(process.cwd(), md)} and ${relative(process.cwd(), svg)}\n`)
  return r.crash !== undefined ? 1 : 0
}

main().then((code) => { process.exitCode = code; setTimeout(() => process.exit(code), 500).unref() }, (err: unknown) => {
  process.stderr.write(String(err) + '\n')
  process.exit(1)
})

import { fork, type ChildProcess } from 'node:child_process'
import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Generator } from './worker.js'
import { Publisher, sleep } from './publisher.js'
import { ServerProbe, sampleProc, fdLimits, type ProcSample } from './server-stats.js'
import { machineCpuSeconds, STEAL_WARN_CORES } from './procs.js'
import { merge, percentilesMs, type Percentiles } from './hist.js'
import { plannedRoomSubs, type FromWorker, type ToWorker, type WorkerProgress, type WorkerReady, type StageReport, type WorkerConfig } from './plan.js'
import type { LoadOptions } from './options.js'

export interface StageSpec { label?: string, rate: number, duration: number, warmup: number }

export interface StageResult {
  label: string
  targetRate: number
  duration: number
  warmup: number
  published: { sent: number, acked: number, failed: number, perSec: number, errors: Record<string, number> }
  latency: Percentiles
  deliveries: {
    /** Events published inside the measurement window and delivered (the latency sample). */
    measured: number
    /** Events received during the measurement window / its duration: the delivery rate actually achieved. */
    perSec: number
    /** Target: rate × subscribers per room. */
    targetPerSec: number
    expected: number
    delivered: number
    lost: number
    duplicates: number
    offsetGaps: number
    offsetDuplicates: number
    subsWithLoss: number
    lossExamples: StageReport['lossExamples']
    drainMs: number
    complete: boolean
    droppedConnections: number
  }
  server: { source: string, cpuSeconds: number, cores: number, usPerDelivery: number, rssBytes: number } | null
  others: Array<{ name: string, cpuSeconds: number, cores: number, usPerDelivery: number }>
  generator: { cpuSeconds: number, cores: number, perProcess: number[], lagP99Ms: number, lagMaxMs: number }
  /**
   * Whole machine over the measurement: busy cores, those used by processes other than server, generator and
   * extras, and the cores the hypervisor withheld (steal).
   */
  machine: { busyCores: number, otherCores: number, stealCores: number } | null
  errors: Record<string, number>
  warnings: string[]
}

export interface ConnectResult {
  planned: number
  ready: number
  failed: number
  /** From the first connection attempt to the last connection subscribed. */
  allSubscribedMs: number
  connectMs: Percentiles
  subscribedMs: Percentiles
  errors: Record<string, number>
  serverRssBefore: number | null
  serverRssAfter: number | null
  rssPerConnectionBytes: number | null
}

export interface LoadSummary {
  tool: 'herald-loadtest'
  startedAt: string
  machine: { nproc: number, node: string }
  options: Omit<LoadOptions, 'secret' | 'tokens'> & { auth: string }
  connect: ConnectResult
  stages: StageResult[]
  generatorProcesses: number
  warnings: string[]
}

export interface SessionHooks {
  /** Called about once a second with a live status line. */
  onProgress?: (line: string, final: boolean) => void
  /** Called as soon as a warning is known (e.g. a low open-files limit). */
  onWarning?: (message: string) => void
}

interface WorkerHandle {
  index: number
  send: (msg: ToWorker) => void
  child?: ChildProcess
  inProcess?: Generator
  progress?: WorkerProgress
  ready?: WorkerReady
  report?: StageReport
  hello: boolean
  uniq: number
  closed: boolean
  lastCpuMicros: number
}

const require = createRequire(import.meta.url)

/**
 * The coordinator: forks the workers, waits until every connection is subscribed, runs publishing stages,
 * aggregates what the workers measured, and reads the server's CPU and memory.
 */
export class LoadSession {
  readonly workers: WorkerHandle[] = []
  private readonly publisher: Publisher
  private readonly probe: ServerProbe
  private readonly roomSubs: number[]
  private readonly started = Date.now()
  private readonly deadline: number
  private progressTimer?: NodeJS.Timeout
  private phase = 'connect'
  private lastPrint: { at: number, cpu?: ProcSample, delivered: number } = { at: Date.now(), delivered: 0 }
  private interval = { n: 0, p99: 0, max: 0 }
  private readonly ownCpu = process.cpuUsage()
  private lastOwnCpu = 0
  private lastServer?: ProcSample
  private stageNo = 0
  private closed = false
  readonly warnings: string[] = []
  connect!: ConnectResult
  readonly stages: StageResult[] = []

  private constructor (readonly o: LoadOptions, private readonly hooks: SessionHooks) {
    this.publisher = new Publisher({
      protocol: o.protocol, targets: o.targets, via: o.publishVia, rooms: o.rooms, channelPrefix: o.channelPrefix,
      payload: o.payload, publishers: o.publishers, secret: o.secret, tokens: o.tokens
    })
    this.probe = new ServerProbe(o.serverPid, o.targets[0])
    this.roomSubs = new Array<number>(o.rooms).fill(0)
    this.deadline = this.started + o.maxSeconds * 1000
  }

  /** Opens every connection and subscribes them; resolves when all are subscribed or have failed. */
  static async open (o: LoadOptions, hooks: SessionHooks = {}): Promise<LoadSession> {
    const s = new LoadSession(o, hooks)
    try {
      await s.start()
    } catch (err) {
      await s.close()
      throw err
    }
    return s
  }

  private checkFds (): void {
    const lim = fdLimits()
    if (lim === undefined) return
    const perProcess = Math.ceil(this.o.connections / Math.max(1, this.o.workers)) + 64
    if (perProcess > lim.soft) {
      const advice = lim.hard >= perProcess * 2
        ? `run \`ulimit -n ${Math.min(lim.hard, 200_000)}\` first`
        : `the hard limit is ${lim.hard}: raise it (e.g. /etc/security/limits.conf, or \`prlimit\`), or use more --workers`
      this.warn(`ulimit -n is ${lim.soft} but each generator process needs about ${perProcess} descriptors: ${advice}`)
    }
    if (this.o.connections + 64 > lim.hard && this.o.targets.every((t) => /\/\/(127\.|\[::1\]|localhost)/.test(t))) {
      this.warn(`the open-files hard limit is ${lim.hard}: a server on this machine with the same limit cannot hold ${this.o.connections} connections`)
    }
  }

  private async start (): Promise<void> {
    this.checkFds()
    const before = await this.probe.sample()
    this.lastServer = before
    await this.publisher.prepare(this.o.connectTimeout * 1000)
    const n = this.o.workers
    const count = Math.max(1, n)
    const per = Math.ceil(this.o.connections / count)
    const hellos: Array<Promise<void>> = []
    for (let w = 0; w < count; w++) {
      const handle: WorkerHandle = { index: w, send: () => {}, hello: n === 0, uniq: 0, closed: false, lastCpuMicros: 0 }
      if (n === 0) {
        const gen = new Generator((msg) => { setImmediate(() => this.onMessage(handle, msg)) })
        handle.inProcess = gen
        handle.send = (msg) => gen.handle(msg)
      } else {
        const child = fork(fileURLToPath(new URL('./worker.ts', import.meta.url)), [], {
          // HERALD_LOADTEST_CPU_PROF=<dir> profiles the workers themselves (is the generator the limit?).
          execArgv: ['--import', require.resolve('tsx'), ...(process.env.HERALD_LOADTEST_CPU_PROF !== undefined ? ['--cpu-prof', '--cpu-prof-dir=' + process.env.HERALD_LOADTEST_CPU_PROF] : [])],
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
          serialization: 'json'
        })
        handle.child = child
        handle.send = (msg) => { if (child.connected) child.send(msg) }
        child.on('message', (msg: FromWorker) => this.onMessage(handle, msg))
        child.on('exit', (code) => {
          handle.closed = true
          if (!this.closed && code !== 0) this.warn(`worker ${w} exited with code ${String(code)}`)
        })
        hellos.push(new Promise<void>((resolve, reject) => {
          child.once('error', reject)
          child.once('exit', (code) => reject(new Error(`worker ${w} exited (${String(code)}) before starting`)))
          child.on('message', (msg: FromWorker) => { if (msg.type === 'hello') resolve() })
        }))
      }
      this.workers.push(handle)
    }
    let helloTimer: NodeJS.Timeout | undefined
    try {
      await Promise.race([Promise.all(hellos), new Promise<void>((_resolve, reject) => { helloTimer = setTimeout(() => reject(new Error('workers did not start within 30 s')), 30_000) })])
    } finally {
      clearTimeout(helloTimer)
    }
    const startAt = Date.now() + 50
    // A different slice of the port range each run, so back-to-back runs rarely meet their own TIME_WAIT sockets.
    const portOffset = Math.floor(Math.random() * 65536)
    for (const handle of this.workers) {
      const from = handle.index * per
      const to = Math.min(this.o.connections, from + per)
      const config: WorkerConfig = {
        index: handle.index, from, to, totalConnections: this.o.connections, protocol: this.o.protocol, targets: this.o.targets,
        rooms: this.o.rooms, subsPerConn: this.o.subsPerConn, mix: this.o.mix, channelPrefix: this.o.channelPrefix,
        sourceAddrs: this.o.sourceAddrs,
        localPorts: this.o.localPorts === null || this.o.sourceAddrs.length === 0 ? null : { base: this.o.localPorts[0], count: this.o.localPorts[1] - this.o.localPorts[0] + 1, offset: portOffset },
        secret: this.o.secret, tokens: this.o.tokens, startAt, ramp: this.o.ramp,
        maxPending: this.o.maxPending, connectTimeout: this.o.connectTimeout, pollTimeout: this.o.pollTimeout, progressMs: 500
      }
      handle.send({ type: 'init', config })
    }
    this.progressTimer = setInterval(() => { void this.printProgress(false) }, this.progressEvery())
    const limit = Math.min(this.deadline, Date.now() + (this.o.ramp + this.o.connectTimeout + 30) * 1000)
    await this.until(() => this.workers.every((h) => h.ready !== undefined), limit, 'connections to be subscribed')
    const readies = this.workers.map((h) => h.ready!)
    for (const r of readies) r.roomSubs.forEach((v, i) => { this.roomSubs[i] += v })
    const errors: Record<string, number> = {}
    for (const r of readies) addInto(errors, r.errors)
    await sleep(this.o.rate === 0 && this.o.duration > 0 ? 0 : 200)
    const after = await this.probe.sample()
    this.lastServer = after ?? this.lastServer
    const ready = sum(readies.map((r) => r.ready))
    const rssBefore = before?.rssBytes ?? null
    const rssAfter = after?.rssBytes ?? null
    this.connect = {
      planned: this.o.connections,
      ready,
      failed: sum(readies.map((r) => r.failed)),
      allSubscribedMs: Math.max(0, ...readies.map((r) => r.allReadyMicros)) / 1000,
      connectMs: percentilesMs(merge(readies.map((r) => r.connectHist))),
      subscribedMs: percentilesMs(merge(readies.map((r) => r.readyHist))),
      errors,
      serverRssBefore: rssBefore,
      serverRssAfter: rssAfter,
      rssPerConnectionBytes: rssBefore !== null && rssAfter !== null && ready > 0 ? (rssAfter - rssBefore) / ready : null
    }
    if (this.connect.failed > 0) this.warn(`${this.connect.failed} of ${this.o.connections} connections failed: ${fmtErrors(errors)}`)
    for (const h of this.workers) h.lastCpuMicros = h.progress?.cpuMicros ?? 0
    this.lastOwnCpu = cpuMicros(process.cpuUsage(this.ownCpu))
    this.phase = 'idle'
  }

  /** Server RSS now (median of `samples` readings `gapMs` apart), for idle-memory measurements. */
  async serverRss (samples = 3, gapMs = 1000): Promise<number | null> {
    const values: number[] = []
    for (let i = 0; i < samples; i++) {
      const s = await this.probe.sample()
      if (s !== undefined) values.push(s.rssBytes)
      if (i < samples - 1) await sleep(gapMs)
    }
    if (values.length === 0) return null
    values.sort((a, b) => a - b)
    return values[Math.floor(values.length / 2)]
  }

  /** Publishes at `rate` for warmup + duration, waits for the last deliveries, and reports the stage. */
  async runStage (spec: StageSpec): Promise<StageResult> {
    if (this.closed) throw new Error('session closed')
    this.stageNo++
    const label = spec.label ?? `stage ${this.stageNo}`
    this.phase = spec.warmup > 0 ? 'warmup' : 'run'
    const stageStart = Date.now()
    const measureFrom = stageStart + spec.warmup * 1000
    const measureEnd = Math.min(measureFrom + spec.duration * 1000, this.deadline - (this.o.drainTimeout + 5) * 1000)
    for (const h of this.workers) { h.report = undefined; h.send({ type: 'stage', measureFrom, measureEnd }) }
    const sentBefore = { ...this.publisher.counts, errors: { ...this.publisher.counts.errors } }
    let serverFrom: ProcSample | undefined
    const others = this.o.extraPids
    let othersFrom: Array<ProcSample | undefined> = []
    let machineFrom: { at: number, cpu: ReturnType<typeof machineCpuSeconds> } | undefined
    const sampleAtStart = setTimeout(() => {
      this.phase = 'run'
      void this.probe.sample().then((s) => { serverFrom = s })
      othersFrom = others.map((p) => sampleProc(p.pid))
      machineFrom = { at: Date.now(), cpu: machineCpuSeconds() }
    }, Math.max(0, measureFrom - Date.now()))
    await this.publisher.run(spec.rate, measureEnd)
    clearTimeout(sampleAtStart)
    if (serverFrom === undefined && Date.now() < measureFrom) serverFrom = await this.probe.sample()
    this.phase = 'drain'
    const expected = this.expectedUnique()
    const drainStart = Date.now()
    const complete = await this.until(() => this.currentUnique() >= expected, Math.min(this.deadline, drainStart + this.o.drainTimeout * 1000), '', false, 20)
    const drainMs = Date.now() - drainStart
    const serverTo = await this.probe.sample()
    const othersTo = others.map((p) => sampleProc(p.pid))
    const machineTo = { at: Date.now(), cpu: machineCpuSeconds() }
    const end = Date.now()
    const failed = [...this.publisher.failed.entries()]
    for (const h of this.workers) h.send({ type: 'stageEnd', maxSeq: this.publisher.seq, failed })
    await this.until(() => this.workers.every((h) => h.report !== undefined || h.closed), Math.min(this.deadline + 5000, Date.now() + 15_000), 'stage reports')
    const reports = this.workers.map((h) => h.report).filter((r): r is StageReport => r !== undefined)
    const latency = percentilesMs(merge(reports.map((r) => r.hist)))
    const windowCount = sum(reports.map((r) => r.windowCount))
    const measured = sum(reports.map((r) => r.measured))
    const inWindow = sum(reports.map((r) => r.inWindow))
    const prev = this.stages.reduce((acc, s) => { acc.lost += s.deliveries.lost; acc.dups += s.deliveries.duplicates; acc.gaps += s.deliveries.offsetGaps; acc.odups += s.deliveries.offsetDuplicates; acc.dropped += s.deliveries.droppedConnections; acc.delivered += s.deliveries.delivered; acc.expected += s.deliveries.expected; return acc }, { lost: 0, dups: 0, gaps: 0, odups: 0, dropped: 0, delivered: 0, expected: 0 })
    const duration = Math.max(0.001, (measureEnd - measureFrom) / 1000)
    const counts = this.publisher.counts
    const errors: Record<string, number> = {}
    for (const r of reports) addInto(errors, r.errors)
    const pubErrors: Record<string, number> = {}
    for (const [k, v] of Object.entries(counts.errors)) { const d = v - (sentBefore.errors[k] ?? 0); if (d > 0) pubErrors[k] = d }
    const genCpu: number[] = this.workers.map((h) => {
      const r = h.report
      const c = r === undefined ? 0 : (r.cpuMicros - h.lastCpuMicros) / 1e6
      if (r !== undefined) h.lastCpuMicros = r.cpuMicros
      return c
    })
    const own = cpuMicros(process.cpuUsage(this.ownCpu))
    const ownCpu = (own - this.lastOwnCpu) / 1e6
    this.lastOwnCpu = own
    const wall = (end - stageStart) / 1000
    const perProcess = this.o.workers === 0 ? [ownCpu] : [ownCpu, ...genCpu]
    const genTotal = sum(perProcess)
    const serverWindow = serverFrom !== undefined && serverTo !== undefined ? (serverTo.at - serverFrom.at) / 1000 : 0
    const serverCpu = serverFrom !== undefined && serverTo !== undefined ? serverTo.cpuSeconds - serverFrom.cpuSeconds : NaN
    const cumulative = {
      lost: sum(reports.map((r) => r.lost)),
      dups: sum(reports.map((r) => r.dups)),
      gaps: sum(reports.map((r) => r.offsetGaps)),
      odups: sum(reports.map((r) => r.offsetDups)),
      dropped: sum(reports.map((r) => r.dropped)),
      expected: sum(reports.map((r) => r.expected))
    }
    const uniq = sum(reports.map((r) => r.uniq))
    const subsTotal = sum(this.roomSubs)
    const result: StageResult = {
      label,
      targetRate: spec.rate,
      duration,
      warmup: spec.warmup,
      published: {
        sent: counts.sent - sentBefore.sent,
        acked: counts.acked - sentBefore.acked,
        failed: counts.failed - sentBefore.failed,
        perSec: (counts.acked - sentBefore.acked) / Math.max(0.001, (measureEnd - stageStart) / 1000),
        errors: pubErrors
      },
      latency,
      deliveries: {
        measured,
        perSec: inWindow / duration,
        targetPerSec: spec.rate * subsTotal / this.o.rooms,
        expected: cumulative.expected - prev.expected,
        delivered: uniq - prev.delivered,
        lost: Math.max(0, cumulative.lost - prev.lost),
        duplicates: cumulative.dups - prev.dups,
        offsetGaps: cumulative.gaps - prev.gaps,
        offsetDuplicates: cumulative.odups - prev.odups,
        subsWithLoss: sum(reports.map((r) => r.subsWithLoss)),
        lossExamples: reports.flatMap((r) => r.lossExamples).slice(0, 5),
        drainMs,
        complete,
        droppedConnections: cumulative.dropped - prev.dropped
      },
      server: Number.isNaN(serverCpu) ? null : {
        source: this.probe.source,
        cpuSeconds: serverCpu,
        cores: serverWindow > 0 ? serverCpu / serverWindow : 0,
        usPerDelivery: windowCount > 0 ? serverCpu * 1e6 / windowCount : 0,
        rssBytes: serverTo!.rssBytes
      },
      others: others.map((p, i) => {
        const a = othersFrom[i]
        const b = othersTo[i]
        const cpu = a !== undefined && b !== undefined ? b.cpuSeconds - a.cpuSeconds : 0
        const win = a !== undefined && b !== undefined ? (b.at - a.at) / 1000 : 0
        return { name: p.name, cpuSeconds: cpu, cores: win > 0 ? cpu / win : 0, usPerDelivery: windowCount > 0 ? cpu * 1e6 / windowCount : 0 }
      }),
      generator: {
        cpuSeconds: genTotal,
        cores: wall > 0 ? genTotal / wall : 0,
        perProcess: perProcess.map((c) => wall > 0 ? c / wall : 0),
        lagP99Ms: Math.max(0, ...reports.map((r) => r.lagP99Ms)),
        lagMaxMs: Math.max(0, ...reports.map((r) => r.lagMaxMs))
      },
      machine: null,
      errors,
      warnings: []
    }
    if (machineFrom?.cpu !== undefined && machineTo.cpu !== undefined && machineTo.at > machineFrom.at) {
      const seconds = (machineTo.at - machineFrom.at) / 1000
      const busyCores = (machineTo.cpu.busy - machineFrom.cpu.busy) / seconds
      const ours = (result.server?.cores ?? 0) + result.generator.cores + sum(result.others.map((x) => x.cores))
      result.machine = { busyCores, otherCores: Math.max(0, busyCores - ours), stealCores: Math.max(0, (machineTo.cpu.steal - machineFrom.cpu.steal) / seconds) }
    }
    this.stageWarnings(result)
    this.stages.push(result)
    this.phase = 'idle'
    return result
  }

  private stageWarnings (r: StageResult): void {
    const w = (m: string): void => { r.warnings.push(m) }
    if (!r.deliveries.complete) w(`not every event arrived within the ${this.o.drainTimeout}s drain`)
    if (r.published.failed > 0) w(`${r.published.failed} publishes failed: ${fmtErrors(r.published.errors)}`)
    if (r.targetRate > 0 && r.published.perSec < r.targetRate * 0.95) w(`published ${r.published.perSec.toFixed(0)}/s of the ${r.targetRate}/s asked (publisher or server saturated)`)
    const busiest = Math.max(...r.generator.perProcess)
    if (busiest > 0.85) w(`a generator process used ${(busiest * 100).toFixed(0)}% of a core: the generator may be the limit, not the server`)
    if (r.generator.lagP99Ms > 50) w(`generator event-loop lag p99 ${r.generator.lagP99Ms.toFixed(0)} ms: latencies include the generator's own queueing`)
    const nproc = availableParallelism()
    const busy = r.generator.cores + (r.server?.cores ?? 0) + sum(r.others.map((o) => o.cores))
    if (busy > nproc * 0.9) w(`server + generator used ${busy.toFixed(2)} of ${nproc} cores: the machine is saturated`)
    if (r.machine !== null && r.machine.otherCores > 0.25) w(`other processes on this machine used ${r.machine.otherCores.toFixed(2)} of ${nproc} cores during the measurement`)
    if (r.machine !== null && r.machine.stealCores > STEAL_WARN_CORES) w(`the hypervisor withheld ${r.machine.stealCores.toFixed(2)} of ${nproc} cores (steal time) during the measurement: another guest was running on this machine's CPUs, and timings are not comparable with a quiet run`)
  }

  /** Deliveries the subscribers should hold once everything published so far has arrived. */
  private expectedUnique (): number {
    const acked = this.publisher.ackedPerRoom()
    let total = 0
    for (let r = 0; r < acked.length; r++) total += acked[r] * this.roomSubs[r]
    return total
  }

  private currentUnique (): number {
    for (const h of this.workers) h.send({ type: 'count' })
    return sum(this.workers.map((h) => Math.max(h.uniq, h.progress?.uniq ?? 0)))
  }

  private onMessage (handle: WorkerHandle, msg: FromWorker): void {
    switch (msg.type) {
      case 'progress':
        handle.progress = msg
        this.interval.n += msg.interval.n
        this.interval.p99 = Math.max(this.interval.p99, msg.interval.p99)
        this.interval.max = Math.max(this.interval.max, msg.interval.max)
        break
      case 'ready': handle.ready = msg; break
      case 'count': handle.uniq = msg.uniq; break
      case 'hello': handle.hello = true; break
      case 'stageReport': handle.report = msg; break
      case 'closed': handle.closed = true; break
      case 'fatal': this.warn(`worker ${handle.index}: ${msg.message}`); break
    }
  }

  private async until (cond: () => boolean, limit: number, what: string, mustHold = true, stepMs = 50): Promise<boolean> {
    while (!cond()) {
      if (Date.now() >= limit) {
        if (mustHold && what !== '') throw new Error(`timed out waiting for ${what}` + (Date.now() >= this.deadline ? ` (hard cap ${this.o.maxSeconds}s)` : ''))
        return false
      }
      await sleep(stepMs)
    }
    return true
  }

  private progressEvery (): number {
    return this.progressMode() === 'tty' ? 1000 : 5000
  }

  private progressMode (): 'tty' | 'plain' | 'off' {
    if (this.o.progress === 'auto') return process.stderr.isTTY ? 'tty' : 'plain'
    return this.o.progress
  }

  private async printProgress (final: boolean): Promise<void> {
    if (this.progressMode() === 'off' || this.hooks.onProgress === undefined) return
    const now = Date.now()
    const ps = this.workers.map((h) => h.progress).filter((p): p is WorkerProgress => p !== undefined)
    const server = this.o.serverPid !== undefined || this.phase !== 'connect' ? await this.probe.sample() : undefined
    const delivered = sum(ps.map((p) => p.delivered))
    const dt = (now - this.lastPrint.at) / 1000
    const rate = dt > 0 ? (delivered - this.lastPrint.delivered) / dt : 0
    let srv = ''
    if (server !== undefined) {
      const prevS = this.lastPrint.cpu ?? this.lastServer
      const cpu = prevS !== undefined && server.at > prevS.at ? (server.cpuSeconds - prevS.cpuSeconds) / ((server.at - prevS.at) / 1000) : 0
      srv = ` | server cpu ${(cpu * 100).toFixed(0)}% rss ${mb(server.rssBytes)}`
    }
    const genCpu = sum(ps.map((p) => p.cpuMicros)) / 1e6
    const elapsed = (now - this.started) / 1000
    const ready = sum(ps.map((p) => p.ready))
    const failed = sum(ps.map((p) => p.failed))
    const dropped = sum(ps.map((p) => p.dropped))
    const iv = this.interval
    const line = `[${elapsed.toFixed(0).padStart(4)}s ${this.phase.padEnd(7)}] conns ${ready}/${this.o.connections}` +
      (failed > 0 ? ` failed ${failed}` : '') + (dropped > 0 ? ` dropped ${dropped}` : '') +
      ` | pub ${this.publisher.counts.acked}` + (this.publisher.counts.failed > 0 ? ` (err ${this.publisher.counts.failed})` : '') +
      ` | recv ${fmtRate(rate)}/s` + (iv.n > 0 ? ` p99 ${iv.p99.toFixed(1)}ms max ${iv.max.toFixed(1)}ms` : '') +
      srv + ` | gen cpu ${genCpu.toFixed(1)}s`
    this.interval = { n: 0, p99: 0, max: 0 }
    this.lastPrint = { at: now, cpu: server, delivered }
    this.hooks.onProgress(line, final)
  }

  private warn (m: string): void {
    if (this.warnings.includes(m)) return
    this.warnings.push(m)
    this.hooks.onWarning?.(m)
  }

  summary (): LoadSummary {
    const { secret, tokens, ...rest } = this.o
    return {
      tool: 'herald-loadtest',
      startedAt: new Date(this.started).toISOString(),
      machine: { nproc: availableParallelism(), node: process.version },
      options: { ...rest, auth: tokens !== undefined ? `${tokens.length} token(s) from file` : secret !== undefined ? 'HS256 secret' : 'none' },
      connect: this.connect,
      stages: this.stages,
      generatorProcesses: Math.max(1, this.o.workers) + (this.o.workers === 0 ? 0 : 1),
      warnings: this.warnings
    }
  }

  /** Closes every connection and worker (by its own PID, SIGKILL if it does not leave within 5 s). */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.progressTimer)
    if (this.hooks.onProgress !== undefined && this.progressMode() === 'tty') this.hooks.onProgress('', true)
    this.publisher.close()
    for (const h of this.workers) h.send({ type: 'close' })
    const limit = Date.now() + 5000
    const exited = (h: WorkerHandle): boolean => h.child === undefined ? h.closed : h.child.exitCode !== null || h.child.signalCode !== null
    while (Date.now() < limit && !this.workers.every(exited)) await sleep(50)
    for (const h of this.workers) {
      const child = h.child
      if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  }
}

/** One complete run, as the CLI does it: open, one stage (unless idle with no duration), close. */
export async function runLoadtest (o: LoadOptions, hooks: SessionHooks = {}): Promise<LoadSummary> {
  const session = await LoadSession.open(o, hooks)
  try {
    if (o.duration > 0 || o.rate > 0) {
      await session.runStage({ label: 'run', rate: o.rate, duration: o.duration, warmup: o.rate > 0 ? o.warmup : 0 })
    }
    return session.summary()
  } finally {
    await session.close()
  }
}

// ---- helpers

function sum (xs: number[]): number { let s = 0; for (const x of xs) s += x; return s }
function cpuMicros (u: NodeJS.CpuUsage): number { return u.user + u.system }
function addInto (into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v
}
export function fmtErrors (e: Record<string, number>): string {
  const entries = Object.entries(e).sort((a, b) => b[1] - a[1])
  return entries.length === 0 ? 'none' : entries.slice(0, 6).map(([k, v]) => `${k} ×${v}`).join(', ') + (entries.length > 6 ? ', …' : '')
}
export function mb (bytes: number): string { return (bytes / 1048576).toFixed(0) + ' MB' }
export function fmtRate (n: number): string {
  if (n >= 1e6) return (n / 1e6).toFixed(2) + 'M'
  if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k'
  return n.toFixed(0)
}

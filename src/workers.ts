import cluster, { type Worker } from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import type { Logger } from 'pino'
import { AggregatorRegistry, type Registry } from 'prom-client'

/*
 * WORKERS=N|auto: one Herald node per core, on one port (node:cluster; the primary hands out connections). Each
 * worker is a full node on the shared Redis bus, and the primary is only a supervisor. It restarts a worker that
 * dies, with backoff. On SIGTERM or SIGINT it tells every worker to drain, waits for them, and exits with 0 only if
 * they all drained cleanly. It also answers /metrics for the whole group: prom-client aggregates the workers'
 * registries over IPC, so one scrape sees every worker.
 */

/** Worker count from WORKERS: `auto` = the cores this process may use; 1 = no workers (the process is the node). */
export function workerCount (spec: string): number {
  if (spec === 'auto') return availableParallelism()
  const n = Number(spec)
  return Number.isInteger(n) && n >= 1 ? n : 1
}

/** Set on every worker's environment by the primary. */
const WORKER_ENV = 'HERALD_WORKER'
const NODE_ENV_ID = 'HERALD_NODE_ID'

const MSG_DRAIN = 'herald:drain'
const MSG_METRICS_REQ = 'herald:metrics-req'
const MSG_METRICS_RES = 'herald:metrics-res'

/** A restarted worker waits this long, doubling per quick death up to RESTART_MAX_MS. */
const RESTART_MIN_MS = 100
const RESTART_MAX_MS = 10_000
/** A worker that lived this long was healthy: its next restart starts from RESTART_MIN_MS again. */
const HEALTHY_AFTER_MS = 10_000

export interface PrimaryOptions {
  count: number
  /** DRAIN_TIMEOUT: workers get this long (plus a margin) to drain before they are killed. */
  drainTimeoutSeconds: number
  log: Logger
}

interface Slot { index: number, worker?: Worker, startedAt: number, backoffMs: number, timer?: NodeJS.Timeout }

/** Runs the supervisor in the primary; resolves with the exit code once every worker is gone after a signal. */
export async function runPrimary (opts: PrimaryOptions): Promise<number> {
  const { count, log } = opts
  const base = randomBytes(3).toString('hex')
  const slots: Slot[] = Array.from({ length: count }, (_, i) => ({ index: i + 1, startedAt: 0, backoffMs: RESTART_MIN_MS }))
  const aggregator = new AggregatorRegistry()
  let stopping = false
  let failedDrains = 0
  /** Set once stopping: called after each worker's exit, resolves when none is left. */
  let settled = (): void => {}

  const fork = (slot: Slot): void => {
    slot.startedAt = Date.now()
    const worker = cluster.fork({ [WORKER_ENV]: String(slot.index), [NODE_ENV_ID]: `${base}-w${slot.index}` })
    slot.worker = worker
    worker.on('message', (msg: { type?: string, id?: number }) => {
      if (msg?.type !== MSG_METRICS_REQ) return
      aggregator.clusterMetrics().then(
        (text) => { if (worker.isConnected()) worker.send({ type: MSG_METRICS_RES, id: msg.id, text }) },
        (err: Error) => { if (worker.isConnected()) worker.send({ type: MSG_METRICS_RES, id: msg.id, error: err.message }) })
    })
    worker.on('exit', (code, signal) => {
      if (slot.worker === worker) slot.worker = undefined
      if (stopping) {
        if (code !== 0) failedDrains++
        log.info({ worker: slot.index, pid: worker.process.pid, code, signal }, 'worker stopped')
        settled()
        return
      }
      // Died on its own: restart it, quickly if it had been healthy, backing off if it keeps dying.
      const lived = Date.now() - slot.startedAt
      if (lived >= HEALTHY_AFTER_MS) slot.backoffMs = RESTART_MIN_MS
      log.error({ worker: slot.index, pid: worker.process.pid, code, signal, livedMs: lived, restartInMs: slot.backoffMs }, 'worker died; restarting it')
      slot.timer = setTimeout(() => { slot.timer = undefined; if (!stopping) fork(slot) }, slot.backoffMs)
      slot.backoffMs = Math.min(slot.backoffMs * 2, RESTART_MAX_MS)
    })
  }

  for (const slot of slots) fork(slot)
  log.info({ workers: count }, 'herald primary started its workers')

  return await new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        // A second signal: the operator will not wait. Kill what is left.
        log.warn({ signal }, 'second signal: killing the workers')
        for (const slot of slots) slot.worker?.process.kill('SIGKILL')
        return
      }
      stopping = true
      log.info({ signal }, 'draining every worker')
      for (const slot of slots) {
        clearTimeout(slot.timer)
        if (slot.worker?.isConnected() === true) slot.worker.send({ type: MSG_DRAIN })
        else slot.worker?.process.kill('SIGTERM')
      }
      const deadline = setTimeout(() => {
        log.error('workers did not drain in time: killing them')
        for (const slot of slots) slot.worker?.process.kill('SIGKILL')
      }, opts.drainTimeoutSeconds * 1000 + 5000)
      settled = (): void => {
        if (slots.some((s) => s.worker !== undefined)) return
        clearTimeout(deadline)
        resolve(failedDrains === 0 ? 0 : 1)
      }
      settled()
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  })
}

export interface WorkerContext {
  /** 1…N, stable across restarts of the same slot. */
  index: number
  nodeId: string
  /** The whole group's metrics, aggregated by the primary. */
  metrics: () => Promise<string>
  /** Lets the primary read this worker's registry (call once the app has built it). */
  share: (registry: Registry) => void
}

/** In a worker started by runPrimary: who it is, and how it reaches the group's metrics. Otherwise undefined. */
export function workerContext (): WorkerContext | undefined {
  if (!cluster.isWorker || process.env[WORKER_ENV] === undefined) return undefined
  // prom-client answers the primary's metric requests from the registries given to setRegistries.
  void new AggregatorRegistry()
  AggregatorRegistry.setRegistries([])
  let next = 0
  const pending = new Map<number, { resolve: (text: string) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }>()
  process.on('message', (msg: { type?: string, id?: number, text?: string, error?: string }) => {
    if (msg?.type !== MSG_METRICS_RES || msg.id === undefined) return
    const request = pending.get(msg.id)
    if (request === undefined) return
    pending.delete(msg.id)
    clearTimeout(request.timer)
    if (msg.error !== undefined) request.reject(new Error(msg.error))
    else request.resolve(msg.text ?? '')
  })
  return {
    index: Number(process.env[WORKER_ENV]),
    nodeId: process.env[NODE_ENV_ID] ?? randomBytes(3).toString('hex'),
    share: (registry) => { AggregatorRegistry.setRegistries([registry]) },
    metrics: async () => {
      const id = next++
      return await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => { pending.delete(id); reject(new Error('the primary did not answer with metrics')) }, 10_000)
        pending.set(id, { resolve, reject, timer })
        process.send?.({ type: MSG_METRICS_REQ, id })
      })
    }
  }
}

/**
 * A worker drains when the primary says so, when it is signalled itself (a terminal's Ctrl-C reaches the whole
 * process group), or when the primary is gone. Whichever comes first starts the drain; the others are no-ops.
 */
export function onWorkerStop (drain: (why: string) => void): void {
  process.on('message', (msg: { type?: string }) => { if (msg?.type === MSG_DRAIN) drain('primary') })
  process.on('SIGTERM', () => drain('SIGTERM'))
  process.on('SIGINT', () => drain('SIGINT'))
  process.on('disconnect', () => drain('primary gone'))
}

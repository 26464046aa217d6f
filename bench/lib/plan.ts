import type { PeerProtocol, Transport } from './options.js'

/** What a worker needs to open its share of the connections (plain data: it crosses process boundaries). */
export interface WorkerConfig {
  index: number
  /** Global connection indices [from, to) this worker holds. */
  from: number
  to: number
  totalConnections: number
  protocol: PeerProtocol
  targets: string[]
  rooms: number
  subsPerConn: number
  mix: Record<Transport, number>
  channelPrefix: string
  sourceAddrs: string[]
  /** Local ports assigned with the source addresses: connection i uses base + (offset + ⌊i / addrs⌋) mod count. */
  localPorts: { base: number, count: number, offset: number } | null
  secret?: string
  tokens?: string[]
  /** Wall-clock ms (Date.now()) at which connection 0 opens; connection i opens at startAt + i/N × ramp. */
  startAt: number
  ramp: number
  maxPending: number
  connectTimeout: number
  pollTimeout: number
  progressMs: number
}

/** Transport of connection `i`: deterministic and evenly interleaved, the same whatever the worker split. */
export function transportOf (i: number, mix: Record<Transport, number>): Transport {
  const pw = mix.ws / 100
  if (Math.floor((i + 1) * pw + 1e-9) > Math.floor(i * pw + 1e-9)) return 'ws'
  const rest = mix.sse + mix.poll
  if (rest <= 0) return 'ws'
  const j = i - Math.floor(i * pw + 1e-9)
  const q = mix.sse / rest
  return Math.floor((j + 1) * q + 1e-9) > Math.floor(j * q + 1e-9) ? 'sse' : 'poll'
}

/** Room indices connection `i` subscribes to: consecutive, distinct, spread evenly over the rooms. */
export function roomsOf (i: number, subsPerConn: number, rooms: number): number[] {
  const out: number[] = []
  for (let k = 0; k < subsPerConn; k++) out.push((i * subsPerConn + k) % rooms)
  return out
}

/** How many subscriptions each room gets from `connections` connections (before failures). */
export function plannedRoomSubs (connections: number, subsPerConn: number, rooms: number): number[] {
  const counts = new Array<number>(rooms).fill(0)
  for (let i = 0; i < connections; i++) for (const r of roomsOf(i, subsPerConn, rooms)) counts[r]++
  return counts
}

// ---- messages between the coordinator and its workers ----

export interface IntervalStats { n: number, p50: number, p99: number, max: number }

export interface WorkerProgress {
  type: 'progress'
  index: number
  opened: number
  connected: number
  ready: number
  failed: number
  pending: number
  dropped: number
  delivered: number
  uniq: number
  /** Events received since the stage's measurement started (by receive time). */
  windowCount: number
  /** Events received inside [measureFrom, measureEnd] (by receive time). */
  inWindow: number
  interval: IntervalStats
  cpuMicros: number
  lagP99Ms: number
  errors: Record<string, number>
}

export interface WorkerReady {
  type: 'ready'
  index: number
  /** Subscribed subscriptions per room. */
  roomSubs: number[]
  ready: number
  failed: number
  /** µs from the start of connecting to the last connection subscribed. */
  allReadyMicros: number
  connectHist: string
  readyHist: string
  errors: Record<string, number>
}

export interface StageReport {
  type: 'stageReport'
  index: number
  hist: string
  /** Events with a send time inside the measurement window (what the histogram holds). */
  measured: number
  windowCount: number
  inWindow: number
  delivered: number
  uniq: number
  dups: number
  offsetGaps: number
  offsetDups: number
  negative: number
  expected: number
  lost: number
  subsWithLoss: number
  lossExamples: Array<{ conn: number, room: number, transport: Transport, expected: number, got: number }>
  dropped: number
  cpuMicros: number
  lagP99Ms: number
  lagMaxMs: number
  errors: Record<string, number>
}

export type FromWorker = WorkerProgress | WorkerReady | StageReport
  | { type: 'hello' }
  | { type: 'count', index: number, uniq: number }
  | { type: 'closed', index: number }
  | { type: 'fatal', index: number, message: string }

export type ToWorker =
  | { type: 'init', config: WorkerConfig }
  | { type: 'stage', measureFrom: number, measureEnd: number }
  | { type: 'stageEnd', maxSeq: number[], failed: Array<[number, number[]]> }
  | { type: 'count' }
  | { type: 'close' }

import type { RoundFigures } from './rounds.js'
import type { LoadOptions, PeerProtocol } from './options.js'
import type { LoadSummary, StageResult } from './session.js'
import type { Percentiles } from './hist.js'

export type PeerId = 'herald-memory' | 'herald-redis' | 'socketio' | 'bare-ws' | 'herald-redis-ping300' | 'herald-redis-workers2' |
  'herald-redis-wd1' | 'herald-redis-wd5' | 'herald-redis-wd20'
export type ScenarioId = 'latency' | 'max-throughput' | 'idle-memory' | 'storm' | 'mixed' | 'hot' | 'hot-max' | 'latency-20k' | 'sse-20k'
/** How a scenario runs: one fixed publish rate, a stepped rate, idle connections (memory), or a connection storm. */
export type ScenarioKind = 'fixed' | 'stepped' | 'idle' | 'storm'

export interface PeerDef {
  id: PeerId
  label: string
  protocol: PeerProtocol
  redis: boolean
  script: string
  /** Transports the peer has (only Herald has SSE and long-poll). */
  transports: string
  /** Extra environment of the server process. */
  env?: Record<string, string>
  /** Not run unless asked for with --peers (a diagnostic variant, not one of the compared servers). */
  diagnostic?: boolean
}

/** Herald with WS_WRITE_DELAY_MS=ms (read by its configuration like any other variable). */
function writeDelayPeer (ms: 1 | 5 | 20): PeerDef {
  return { id: `herald-redis-wd${ms}`, label: `Herald, Redis bus, WS_WRITE_DELAY_MS=${ms}`, protocol: 'herald', redis: true, script: 'src/server.ts', transports: 'ws, sse, long-poll', env: { WS_WRITE_DELAY_MS: String(ms) }, diagnostic: true }
}

export const PEERS: PeerDef[] = [
  { id: 'herald-memory', label: 'Herald, in-process bus', protocol: 'herald', redis: false, script: 'src/server.ts', transports: 'ws, sse, long-poll' },
  { id: 'herald-redis', label: 'Herald, Redis bus', protocol: 'herald', redis: true, script: 'src/server.ts', transports: 'ws, sse, long-poll' },
  { id: 'socketio', label: 'Socket.IO 4 + redis-adapter', protocol: 'socketio', redis: true, script: 'bench/peers/socketio.ts', transports: 'ws' },
  { id: 'bare-ws', label: 'bare ws + ioredis', protocol: 'bare', redis: true, script: 'bench/peers/bare-ws.ts', transports: 'ws' },
  // Diagnostic: Herald with its WebSocket heartbeat out of the measurement (WS_PING_INTERVAL=300 s instead of 25 s).
  { id: 'herald-redis-workers2', label: 'Herald, Redis bus, WORKERS=2 (diagnostic)', protocol: 'herald', redis: true, script: 'src/server.ts', transports: 'ws, sse, long-poll', env: { WORKERS: '2' }, diagnostic: true },
  { id: 'herald-redis-ping300', label: 'Herald, Redis bus, WS_PING_INTERVAL=300 (diagnostic)', protocol: 'herald', redis: true, script: 'src/server.ts', transports: 'ws, sse, long-poll', env: { WS_PING_INTERVAL: '300' }, diagnostic: true },
  writeDelayPeer(1),
  writeDelayPeer(5),
  writeDelayPeer(20)
]

export interface ScenarioSize {
  connections: number
  rooms: number
  rate: number
  duration: number
  warmup: number
  /** Idle seconds before the memory reading (idle-memory). */
  idle: number
  /** Deliveries per second to try, in order (max-throughput). */
  steps: number[]
  mix: LoadOptions['mix']
  /** Channels each connection subscribes to (1 unless said). */
  subsPerConn?: number
  ramp: number
  maxPending: number
  capSeconds: number
}

export interface ScenarioDef {
  id: ScenarioId
  number: number
  kind: ScenarioKind
  title: string
  description: string
  peers: PeerId[]
  size: (quick: boolean, fdCap: number) => ScenarioSize
}

const ALL: PeerId[] = ['herald-memory', 'herald-redis', 'socketio', 'bare-ws']
const WS_ONLY = { ws: 100, sse: 0, poll: 0 }

/** Scenario 1's shape (10,000 connections over 100 rooms) at `rate` events/s, with `mix`; a tenth of both when quick. */
function roomsAtRate (rate: number, mix: LoadOptions['mix']): (quick: boolean) => ScenarioSize {
  return (quick) => quick
    ? { connections: 300, rooms: 10, rate: rate / 10, duration: 2, warmup: 0.5, idle: 0, steps: [], mix, ramp: 0, maxPending: 512, capSeconds: 45 }
    : { connections: 10_000, rooms: 100, rate, duration: 30, warmup: 5, idle: 0, steps: [], mix, ramp: 5, maxPending: 512, capSeconds: 240 }
}

export const SCENARIOS: ScenarioDef[] = [
  {
    id: 'latency',
    number: 1,
    kind: 'fixed',
    title: 'Latency at fixed load',
    description: '10,000 WebSocket connections, 100 rooms (100 subscribers each), 500 events/s published over REST: 50,000 deliveries/s.',
    peers: ALL,
    size: roomsAtRate(500, WS_ONLY)
  },
  {
    id: 'max-throughput',
    number: 2,
    kind: 'stepped',
    title: 'Maximum sustained deliveries per second (p99 < 50 ms, no loss)',
    description: '10,000 WebSocket connections, 100 rooms; the publish rate steps up (30 s measured per step, longer than the 25 s heartbeat period of Herald and Socket.IO) until p99 ≥ 50 ms twice in a row, an event is lost, or the publish rate cannot be held; then one step halfway back.',
    peers: [...ALL, 'herald-redis-ping300', 'herald-redis-workers2'],
    size: (quick) => quick
      ? { connections: 300, rooms: 10, rate: 0, duration: 2, warmup: 0.5, idle: 0, steps: [1_500, 6_000], mix: WS_ONLY, ramp: 0, maxPending: 512, capSeconds: 45 }
      : { connections: 10_000, rooms: 100, rate: 0, duration: 30, warmup: 2, idle: 0, steps: [5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000], mix: WS_ONLY, ramp: 5, maxPending: 512, capSeconds: 900 }
  },
  {
    id: 'idle-memory',
    number: 3,
    kind: 'idle',
    title: 'Memory per idle subscribed WebSocket connection',
    description: '20,000 WebSocket connections (fewer if the open-files limit forbids), one subscription each over 100 rooms, idle; server RSS delta / connections.',
    peers: ALL,
    size: (quick, fdCap) => quick
      ? { connections: 1000, rooms: 10, rate: 0, duration: 0, warmup: 0, idle: 2, steps: [], mix: WS_ONLY, ramp: 0.5, maxPending: 512, capSeconds: 45 }
      : { connections: Math.min(20_000, fdCap), rooms: 100, rate: 0, duration: 0, warmup: 0, idle: 10, steps: [], mix: WS_ONLY, ramp: 10, maxPending: 512, capSeconds: 240 }
  },
  {
    id: 'storm',
    number: 4,
    kind: 'storm',
    title: 'Connection storm',
    description: '20,000 clients (fewer if the open-files limit forbids) connect and subscribe at once (no pacing, no in-flight bound); time until all are subscribed.',
    peers: ALL,
    size: (quick, fdCap) => quick
      ? { connections: 1000, rooms: 10, rate: 0, duration: 0, warmup: 0, idle: 0, steps: [], mix: WS_ONLY, ramp: 0, maxPending: 1000, capSeconds: 45 }
      : { connections: Math.min(20_000, fdCap), rooms: 100, rate: 0, duration: 0, warmup: 0, idle: 0, steps: [], mix: WS_ONLY, ramp: 0, maxPending: 1_000_000, capSeconds: 240 }
  },
  {
    id: 'mixed',
    number: 5,
    kind: 'fixed',
    title: 'Mixed transports (Herald only)',
    description: 'As scenario 1 with 50% WebSocket, 40% SSE, 10% long-poll. The peers have no SSE or long-poll, so only Herald runs it.',
    peers: ['herald-memory', 'herald-redis'],
    size: roomsAtRate(500, { ws: 50, sse: 40, poll: 10 })
  },
  {
    id: 'hot',
    number: 6,
    kind: 'fixed',
    title: 'Hot channels',
    description: '40 WebSocket connections, each subscribed to the same 10 channels, 1,000 events/s published over REST over those channels (100/s each): every connection gets 1,000 events/s, 40,000 deliveries/s in all.',
    peers: ['herald-memory', 'herald-redis', 'bare-ws', 'herald-redis-wd1', 'herald-redis-wd5', 'herald-redis-wd20'],
    size: (quick) => quick
      ? { connections: 10, rooms: 10, subsPerConn: 10, rate: 200, duration: 2, warmup: 0.5, idle: 0, steps: [], mix: WS_ONLY, ramp: 0, maxPending: 512, capSeconds: 45 }
      : { connections: 40, rooms: 10, subsPerConn: 10, rate: 1000, duration: 20, warmup: 3, idle: 0, steps: [], mix: WS_ONLY, ramp: 1, maxPending: 512, capSeconds: 180 }
  },
  {
    id: 'hot-max',
    number: 7,
    kind: 'stepped',
    title: 'Hot channels, maximum sustained deliveries per second (p99 < 50 ms, no loss)',
    description: 'Scenario 6\'s shape (40 WebSocket connections, each subscribed to the same 10 channels: 40 deliveries per publish) with the publish rate stepped up as in scenario 2 (15 s measured per step) until p99 ≥ 50 ms twice in a row, an event is lost, or the publish rate cannot be held; then one step halfway back.',
    peers: ['herald-memory', 'herald-redis', 'bare-ws'],
    size: (quick) => quick
      ? { connections: 10, rooms: 10, subsPerConn: 10, rate: 0, duration: 2, warmup: 0.5, idle: 0, steps: [2_000, 8_000], mix: WS_ONLY, ramp: 0, maxPending: 512, capSeconds: 45 }
      : { connections: 40, rooms: 10, subsPerConn: 10, rate: 0, duration: 15, warmup: 2, idle: 0, steps: [40_000, 80_000, 100_000, 120_000, 140_000, 160_000, 200_000, 240_000, 320_000], mix: WS_ONLY, ramp: 1, maxPending: 512, capSeconds: 600 }
  },
  {
    id: 'latency-20k',
    number: 8,
    kind: 'fixed',
    title: 'Latency and CPU at 20,000 deliveries/s',
    description: 'As scenario 1 at 200 events/s: 10,000 WebSocket connections, 100 rooms, 20,000 deliveries/s, a load every server here holds (scenario 1 saturates them all), so latency and CPU per delivery are compared at the same delivered rate.',
    peers: [...ALL, 'herald-redis-ping300'],
    size: roomsAtRate(200, WS_ONLY)
  },
  {
    id: 'sse-20k',
    number: 9,
    kind: 'fixed',
    title: 'SSE at 20,000 deliveries/s (Herald only)',
    description: 'Scenario 8 with every connection on Server-Sent Events instead of WebSocket: its CPU per delivery against scenario 8\'s for the same server is what SSE costs over WebSocket.',
    peers: ['herald-memory', 'herald-redis'],
    size: roomsAtRate(200, { ws: 0, sse: 100, poll: 0 })
  }
]

/** bench/floor.ts in the same run: a plain `net` server's CPU per small loopback write, in a fixed-rate scenario's shape. */
export interface FloorResult {
  /** The fixed-rate scenario whose shape (connections, deliveries/s) it ran in. */
  scenario: ScenarioId
  connections: number
  askedPerSec: number
  perSec: number
  /** Server CPU per message, µs: user + system, and each. */
  serverUs: number
  serverUserUs: number
  serverSystemUs: number
  readersUs: number
  /** Run in rounds (bench/lib/rounds.ts): CPU per write of each round whose floor ran (a failed one is left out, with a note); this result is their median. */
  rounds?: number[]
}

export interface StepResult {
  targetPerSec: number
  rate: number
  perSec: number
  p99: number
  lost: number
  pass: boolean
  why: string
  usPerDelivery: number | null
  generatorCores: number
}

/** One (scenario, peer) run, flattened for tables, ratios and the plot; `summary` keeps the raw figures. */
export interface RunResult {
  scenario: ScenarioId
  peer: PeerId
  ok: boolean
  error?: string
  seconds: number
  connections: number
  ready: number
  failed: number
  latency?: Percentiles
  deliveredPerSec?: number
  targetPerSec?: number
  lost?: number
  duplicates?: number
  offsetGaps?: number
  serverUsPerDelivery?: number | null
  serverCores?: number | null
  redisUsPerDelivery?: number | null
  generatorCores?: number
  generatorBusiest?: number
  otherCores?: number | null
  /** Cores the hypervisor withheld during the measurement (steal time; see session.ts). */
  stealCores?: number | null
  rssBeforeBytes?: number | null
  rssAfterBytes?: number | null
  rssPerConnectionBytes?: number | null
  allSubscribedMs?: number
  connect?: Percentiles
  subscribed?: Percentiles
  maxSustainedPerSec?: number | null
  steps?: StepResult[]
  /** Run in rounds (bench/lib/rounds.ts): each round's figures; this result is the median round. */
  rounds?: RoundFigures[]
  warnings: string[]
  summary?: LoadSummary
}

export function stageFigures (st: StageResult): Partial<RunResult> {
  return {
    latency: st.latency,
    deliveredPerSec: st.deliveries.perSec,
    targetPerSec: st.deliveries.targetPerSec,
    lost: st.deliveries.lost,
    duplicates: st.deliveries.duplicates,
    offsetGaps: st.deliveries.offsetGaps,
    serverUsPerDelivery: st.server?.usPerDelivery ?? null,
    serverCores: st.server?.cores ?? null,
    redisUsPerDelivery: st.others.find((o) => o.name === 'redis')?.usPerDelivery ?? null,
    generatorCores: st.generator.cores,
    generatorBusiest: Math.max(...st.generator.perProcess),
    otherCores: st.machine?.otherCores ?? null,
    stealCores: st.machine?.stealCores ?? null
  }
}

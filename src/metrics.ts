import { getHeapStatistics } from 'node:v8'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Publication } from './bus/broker.js'
import { TRANSPORTS, type TransportName } from './protocol/transports.js'
import { version } from './version.js'
import { EventLog } from './control/events.js'

/** Figures owned by other services, read at scrape time. */
export interface MetricSources {
  connections: (transport: TransportName) => number
  channels: () => number
  subscriptions: () => number
  /** Bytes on their way to clients (outboxes and send buffers), by transport. */
  outboxBytes: () => Record<TransportName, number>
  /** The bus answers (what /readyz checks first). */
  busUp: () => boolean
  /** /readyz would answer 200: the bus is up and the node is not draining. */
  ready: () => boolean
  /** Webhooks waiting for delivery (cluster-wide with Redis), as this node last read it. */
  webhooksQueued: () => number
}

/** Upper bounds (seconds) of herald_delivery_latency_seconds' buckets; +Inf follows. */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

/**
 * Prometheus instruments of one Herald instance (its own registry, so several instances can share a process).
 * Hot-path counts are plain numbers folded into the counters at scrape time, not a prom-client call per delivery.
 */
export class Metrics {
  readonly registry = new Registry()
  /** Deliveries per transport since start; the transports add to these directly. */
  readonly delivered = Object.fromEntries(TRANSPORTS.map((t) => [t, 0])) as Record<TransportName, number>
  private readonly deliveredReported = { ...this.delivered }
  private sources: MetricSources = {
    connections: () => 0,
    channels: () => 0,
    subscriptions: () => 0,
    outboxBytes: () => Object.fromEntries(TRANSPORTS.map((t) => [t, 0])) as Record<TransportName, number>,
    busUp: () => true,
    ready: () => true,
    webhooksQueued: () => 0
  }
  readonly published: Counter<'transport'>
  readonly errors: Counter<'code'>
  readonly busReconnects: Counter
  readonly evictions: Counter<'transport' | 'reason'>
  readonly heartbeatTimeouts: Counter
  readonly catchUps: Counter<'reason'>
  readonly latency: Histogram
  readonly webhooks: Counter<'type' | 'result'>
  /** The last notable events (closes, evictions, refusals, bus reconnects), recorded where these counters are counted. */
  readonly events = new EventLog()

  constructor (defaultMetrics = true, identity?: { node: string, worker?: number }) {
    const registers = [this.registry]
    const self = this
    if (identity !== undefined) {
      // One series per node (per worker with WORKERS, whose metrics the primary sums): who is behind the figures.
      new Gauge({ name: 'herald_node_info', help: 'This node: its id, process, worker slot (WORKERS) and version; always 1', labelNames: ['node', 'pid', 'worker', 'version'], registers })
        .set({ node: identity.node, pid: String(process.pid), worker: String(identity.worker ?? 0), version }, 1)
    }
    new Gauge({
      name: 'herald_connections', help: 'Open client connections by transport', labelNames: ['transport'], registers,
      collect () { for (const t of TRANSPORTS) this.set({ transport: t }, self.sources.connections(t)) }
    })
    new Gauge({ name: 'herald_channels', help: 'Channels with local subscribers', registers, collect () { this.set(self.sources.channels()) } })
    new Gauge({ name: 'herald_subscriptions', help: 'Local subscriptions (all transports)', registers, collect () { this.set(self.sources.subscriptions()) } })
    new Gauge({
      name: 'herald_outbox_bytes', help: 'Bytes on their way to clients: waiting in connection outboxes and in their send buffers, by transport', labelNames: ['transport'], registers,
      collect () { const bytes = self.sources.outboxBytes(); for (const t of TRANSPORTS) this.set({ transport: t }, bytes[t]) }
    })
    // With WORKERS the primary sums gauges; these two take the minimum, so one worker down reads 0.
    new Gauge({ name: 'herald_bus_up', help: 'Whether the bus answers (1) or not (0)', registers, aggregator: 'min', collect () { this.set(self.sources.busUp() ? 1 : 0) } })
    new Gauge({ name: 'herald_ready', help: 'Whether /readyz answers 200 (1): the bus is up and the node is not draining', registers, aggregator: 'min', collect () { this.set(self.sources.ready() ? 1 : 0) } })
    new Counter({
      name: 'herald_events_delivered_total', help: 'Events written to clients, by transport', labelNames: ['transport'], registers,
      collect () {
        for (const t of TRANSPORTS) {
          const delta = self.delivered[t] - self.deliveredReported[t]
          if (delta > 0) this.inc({ transport: t }, delta)
          self.deliveredReported[t] = self.delivered[t]
        }
      }
    })
    this.published = new Counter({ name: 'herald_events_published_total', help: 'Events accepted for publishing, by transport (rest, websocket, api: a server API broadcast)', labelNames: ['transport'], registers })
    this.errors = new Counter({ name: 'herald_errors_total', help: 'Errors answered to clients, by HERALD_ERR code', labelNames: ['code'], registers })
    this.busReconnects = new Counter({ name: 'herald_bus_reconnects_total', help: 'Times the bus connection came back after a loss', registers })
    this.evictions = new Counter({ name: 'herald_evictions_total', help: 'Slow consumers: connections evicted (reason=disconnect) or channels dropped (reason=dropped)', labelNames: ['transport', 'reason'], registers })
    this.heartbeatTimeouts = new Counter({ name: 'herald_heartbeat_timeouts_total', help: 'WebSockets terminated for missing a pong', registers })
    this.catchUps = new Counter({ name: 'herald_bus_catchups_total', help: 'Channels caught up from history: a publication did not follow (gap), the bus reconnected (reconnect), or the position check found the channel behind (position: a lost subscription)', labelNames: ['reason'], registers })
    this.webhooks = new Counter({ name: 'herald_webhooks_total', help: 'Channel and user state webhooks by type and result: sent (2xx), failed (an attempt did not succeed), retried (another attempt scheduled), dropped (given up after WEBHOOK_MAX_ATTEMPTS, or pushed out of a full queue)', labelNames: ['type', 'result'], registers })
    // The same cluster-wide figure on every worker: the maximum, not the sum.
    new Gauge({ name: 'herald_webhooks_queued', help: 'Webhooks waiting for delivery (cluster-wide with Redis, as this node last read it)', registers, aggregator: 'max', collect () { this.set(self.sources.webhooksQueued()) } })
    this.latency = new Histogram({
      name: 'herald_delivery_latency_seconds', help: 'Publish-to-dispatch latency on this node (publish time stamped by the accepting node)', registers,
      buckets: LATENCY_BUCKETS
    })
    if (defaultMetrics) {
      // Event-loop lag (herald_nodejs_eventloop_lag_*), heap and RSS come from prom-client's default metrics.
      collectDefaultMetrics({ register: this.registry, prefix: 'herald_' })
      new Gauge({ name: 'herald_heap_limit_bytes', help: 'V8 heap size limit (--max-old-space-size): what herald_nodejs_heap_size_used_bytes may reach', registers })
        .set(getHeapStatistics().heap_size_limit)
    }
  }

  /** herald_delivery_latency_seconds' cumulative bucket counts since start, in LATENCY_BUCKETS order then +Inf. */
  async latencyBuckets (): Promise<number[]> {
    const counts = new Array<number>(LATENCY_BUCKETS.length + 1).fill(0)
    for (const v of (await this.latency.get()).values) {
      if (v.metricName !== 'herald_delivery_latency_seconds_bucket') continue
      const le = v.labels.le
      const i = le === '+Inf' ? LATENCY_BUCKETS.length : LATENCY_BUCKETS.indexOf(Number(le))
      if (i >= 0) counts[i] = v.value
    }
    return counts
  }

  /** Where the gauges read their figures (set by the services that own them). */
  collectFrom (sources: Partial<MetricSources>): void { this.sources = { ...this.sources, ...sources } }

  /** The hub's observer: latency of every dispatched publication, and bus reconnects. */
  readonly hubObserver = {
    dispatched: (pub: Publication): void => { this.latency.observe((Date.now() - pub.ts) / 1000) },
    reconnected: (): void => { this.busReconnects.inc(); this.events.record('bus-reconnect', 'the bus connection came back; channels catch up from history') },
    caughtUp: (reason: 'gap' | 'reconnect' | 'position'): void => { this.catchUps.inc({ reason }) }
  }
}

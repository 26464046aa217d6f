import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Connections, TransportName } from './hub/connections.js'
import type { Hub } from './hub/hub.js'

/**
 * Prometheus instruments of one Herald instance (its own registry, so several instances can share a process).
 * Hot-path counts are plain numbers folded into the counters at scrape time, not a prom-client call per delivery.
 */
export class Metrics {
  readonly registry = new Registry()
  /** Deliveries per transport since start; the sinks add to these directly. */
  readonly delivered: Record<TransportName, number> = { ws: 0, sse: 0, poll: 0 }
  private readonly deliveredReported: Record<TransportName, number> = { ws: 0, sse: 0, poll: 0 }
  readonly published: Counter<'transport'>
  readonly errors: Counter<'code'>
  readonly busReconnects: Counter
  readonly evictions: Counter<'transport' | 'reason'>
  readonly heartbeatTimeouts: Counter
  readonly latency: Histogram

  constructor (connections: Connections, hub: Hub, defaultMetrics = true) {
    const registers = [this.registry]
    const self = this
    new Gauge({
      name: 'herald_connections', help: 'Open client connections by transport', labelNames: ['transport'], registers,
      collect () { for (const t of ['ws', 'sse', 'poll'] as const) this.set({ transport: t }, connections.count(t)) }
    })
    new Gauge({ name: 'herald_channels', help: 'Channels with local subscribers', registers, collect () { this.set(hub.channelCount) } })
    new Gauge({ name: 'herald_subscriptions', help: 'Local subscriptions (all transports)', registers, collect () { this.set(hub.subscriptionCount) } })
    new Counter({
      name: 'herald_events_delivered_total', help: 'Events written to clients, by transport', labelNames: ['transport'], registers,
      collect () {
        for (const t of ['ws', 'sse', 'poll'] as const) {
          const delta = self.delivered[t] - self.deliveredReported[t]
          if (delta > 0) this.inc({ transport: t }, delta)
          self.deliveredReported[t] = self.delivered[t]
        }
      }
    })
    this.published = new Counter({ name: 'herald_events_published_total', help: 'Events accepted for publishing, by transport (rest, ws)', labelNames: ['transport'], registers })
    this.errors = new Counter({ name: 'herald_errors_total', help: 'Errors answered to clients, by HERALD_ERR code', labelNames: ['code'], registers })
    this.busReconnects = new Counter({ name: 'herald_bus_reconnects_total', help: 'Times the bus connection came back after a loss', registers })
    this.evictions = new Counter({ name: 'herald_evictions_total', help: 'Slow consumers: connections evicted (reason=disconnect) or channels dropped (reason=dropped)', labelNames: ['transport', 'reason'], registers })
    this.heartbeatTimeouts = new Counter({ name: 'herald_heartbeat_timeouts_total', help: 'WebSockets terminated for missing a pong', registers })
    this.latency = new Histogram({
      name: 'herald_delivery_latency_seconds', help: 'Publish-to-dispatch latency on this node (publish time stamped by the accepting node)', registers,
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
    })
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'herald_' })
  }
}

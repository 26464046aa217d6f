import type { Hub } from '../hub/hub.js'
import type { Connection, SessionRegistry } from '../session/registry.js'
import type { Session } from '../session/session.js'
import type { StreamPosition } from '../protocol/cursor.js'
import type { DeliveryCounts } from '../transports/transport.js'
import { TRANSPORTS, type TransportName } from '../protocol/transports.js'
import { CloseCodes } from '../protocol/codes.js'
import { matches } from '../auth/permissions.js'
import { Errors, asHeraldError } from '../errors.js'
import type { Revocation, RevocationList } from './revocations.js'
import { EVENTS_KEPT, type EventLog, type NodeEvent } from './events.js'
import type { NodeInfo, ConnectionInfo } from './views.js'

/** What the server API asks every node to do (control/plane.ts carries it); each node acts on its own connections. */
export type Command =
  | { op: 'disconnect', sub: string, client?: string, code: number, reason: string }
  | { op: 'subscribe', sub: string, channel: string, since?: StreamPosition, client?: string }
  | { op: 'unsubscribe', sub: string, channel: string, client?: string }
  | { op: 'revoke', revocation: Revocation }
  | { op: 'channels', pattern?: string, limit: number }
  | { op: 'node' }
  | { op: 'connections', sub: string }
  | { op: 'events', limit: number, after?: number }

/** A connection that could not do what was asked, in a command's answer. */
export interface ConnectionError { client: string, code: string, message: string }

export type { NodeInfo, ConnectionInfo } from './views.js'

export interface ActionServices {
  registry: SessionRegistry
  hub: Hub
  revocations: RevocationList
  delivered: DeliveryCounts
  /** herald_delivery_latency_seconds: bucket upper bounds (seconds) and their cumulative counts since start (bounds, then +Inf). */
  latency?: { bounds: number[], counts: () => Promise<number[]> }
  /** This node's events tail. */
  events?: EventLog
  pollSessions: () => number
  draining: () => boolean
  node: { id: string, version: string, bus: string, worker?: number }
}

/** At most this many per-connection errors in one answer (the counts still cover them all). */
const MAX_ERRORS = 20
const DELIVERY_WINDOW_MS = 10_000

/**
 * The commands of the server API as one node carries them out on its own connections, whatever their transport:
 * a WebSocket gets its frames and close code, an SSE stream its messages and `disconnect`, a long-poll session the
 * lists of its next answer (transports/long-poll.ts).
 */
export class LocalActions {
  private readonly startedAt = Date.now()
  private readonly samples: Array<{ at: number, delivered: number, latency: number[] }> = []
  private readonly sampler: NodeJS.Timeout

  constructor (private readonly services: ActionServices) {
    void this.sample()
    this.sampler = setInterval(() => { void this.sample() }, DELIVERY_WINDOW_MS / 2).unref()
  }

  close (): void { clearInterval(this.sampler) }

  async execute (cmd: Command): Promise<unknown> {
    switch (cmd.op) {
      case 'disconnect': return this.disconnect(cmd.sub, cmd.client, cmd.code, cmd.reason)
      case 'subscribe': return await this.subscribe(cmd.sub, cmd.channel, cmd.since, cmd.client)
      case 'unsubscribe': return this.unsubscribe(cmd.sub, cmd.channel, cmd.client)
      case 'revoke': return this.revoke(cmd.revocation)
      case 'channels': return this.channels(cmd.pattern, cmd.limit)
      case 'node': return await this.node()
      case 'connections': return this.connections(cmd.sub)
      case 'events': return this.events(cmd.limit, cmd.after)
      default: throw new Errors.VALIDATION(`unknown control command ${JSON.stringify((cmd as { op?: unknown }).op)}`)
    }
  }

  /**
   * Closes every connection of `sub` (or the one with id `client`): its sessions (a long-poll session answers the
   * polls waiting on it), then its polls waiting on others' sessions. `closed` counts connections: WebSockets, SSE
   * streams, waiting polls.
   */
  disconnect (sub: string, client: string | undefined, code: number, reason: string): { closed: number } {
    const { registry } = this.services
    const before = registry.count()
    for (const session of this.sessionsOf(sub, client)) session.close(code, reason)
    if (client === undefined) for (const conn of registry.connectionsOf(sub)) conn.close(code, reason)
    return { closed: before - registry.count() }
  }

  /** Subscribes every live connection of `sub` (or one) to `channel`, from `since` when given. */
  async subscribe (sub: string, channel: string, since: StreamPosition | undefined, client?: string): Promise<{ connections: number, subscribed: number, already: number, errors: ConnectionError[] }> {
    const sessions = this.sessionsOf(sub, client)
    const errors: ConnectionError[] = []
    let subscribed = 0
    let already = 0
    await Promise.all(sessions.map(async (session) => {
      try {
        await session.serverSubscribe(channel, since)
        subscribed++
      } catch (err) {
        const herr = asHeraldError(err)
        if (herr.code === 'HERALD_ERR_ALREADY_SUBSCRIBED') already++
        else if (errors.length < MAX_ERRORS) errors.push({ client: session.id, code: herr.code, message: herr.message })
      }
    }))
    return { connections: sessions.length, subscribed, already, errors }
  }

  unsubscribe (sub: string, channel: string, client?: string): { connections: number, unsubscribed: number } {
    const sessions = this.sessionsOf(sub, client)
    let unsubscribed = 0
    for (const session of sessions) if (session.unsubscribe(channel, 'server')) unsubscribed++
    return { connections: sessions.length, unsubscribed }
  }

  /** Applies a revocation here and closes the connections whose tokens it refuses (`closed` counts them, as disconnect does). */
  revoke (r: Revocation): { closed: number } {
    const list = this.services.revocations
    list.apply(r)
    const { registry } = this.services
    const before = registry.count()
    const close = (conns: Connection[]): void => {
      for (const conn of conns) {
        const principal = conn.principal
        if (principal !== undefined && list.check(principal) !== undefined) conn.close(CloseCodes.TOKEN_REVOKED, 'token revoked')
      }
    }
    // Connections first — WebSockets, SSE streams and each waiting poll by its own token — then the long-poll sessions
    // opened with a revoked token: the polls still waiting on them carry another token, and just go on.
    close(r.kind === 'sub' ? registry.connectionsOf(r.sub) : registry.connections())
    close(r.kind === 'sub' ? registry.sessionsOf(r.sub) : registry.sessions())
    return { closed: before - registry.count() }
  }

  /** Channels with subscribers on this node that match `pattern` (permission-pattern syntax), with their counts. */
  channels (pattern: string | undefined, limit: number): { channels: Array<[string, number]>, truncated: boolean } {
    const out: Array<[string, number]> = []
    for (const [name, count] of this.services.hub.subscribedChannels()) {
      if (pattern !== undefined && !matches(pattern, name)) continue
      if (out.length >= limit) return { channels: out, truncated: true }
      out.push([name, count])
    }
    return { channels: out, truncated: false }
  }

  async node (): Promise<NodeInfo> {
    const { registry, hub, node } = this.services
    const [latencyP50, latencyP99] = await this.latencyPercentiles([0.5, 0.99])
    const connections = Object.fromEntries(TRANSPORTS.map((t) => [t, registry.count(t)])) as Record<TransportName, number>
    const info: NodeInfo = {
      node: node.id,
      version: node.version,
      uptime: Math.floor((Date.now() - this.startedAt) / 1000),
      bus: node.bus,
      draining: this.services.draining(),
      connections,
      pollSessions: this.services.pollSessions(),
      channels: hub.channelCount,
      subscriptions: hub.subscriptionCount,
      deliveriesPerSecond: this.deliveryRate(),
      latencyP50,
      latencyP99,
      revocations: this.services.revocations.size
    }
    if (node.worker !== undefined) info.worker = node.worker
    return info
  }

  /** The connections of `sub` on this node (WebSockets, SSE streams, long-poll sessions), oldest first. */
  connections (sub: string): { connections: ConnectionInfo[] } {
    const connections = this.sessionsOf(sub, undefined)
      .map((s) => ({ client: s.id, transport: s.transportName, since: s.openedAt, subscriptions: s.subscriptionCount, buffered: s.buffered() }))
      .sort((a, b) => a.since - b.since)
    return { connections }
  }

  /** This node's newest events (at most `limit`, newest first), only those after sequence number `after` when given. */
  events (limit: number, after?: number): { events: NodeEvent[], last: number } {
    const log = this.services.events
    if (log === undefined) return { events: [], last: 0 }
    return { events: log.list(Math.max(0, Math.min(limit, EVENTS_KEPT)), after ?? 0), last: log.lastSeq }
  }

  private sessionsOf (sub: string, client: string | undefined): Session[] {
    const sessions = this.services.registry.sessionsOf(sub)
    return client === undefined ? sessions : sessions.filter((s) => s.id === client)
  }

  private delivered (): number {
    let n = 0
    for (const t of TRANSPORTS) n += this.services.delivered[t]
    return n
  }

  private async latencyCounts (): Promise<number[]> {
    return await this.services.latency?.counts().catch(() => []) ?? []
  }

  private async sample (): Promise<void> {
    // Pushed at once (deliveryRate needs a first sample); its latency counts follow (empty: counted since start).
    const entry = { at: Date.now(), delivered: this.delivered(), latency: [] as number[] }
    this.samples.push(entry)
    if (this.samples.length > 3) this.samples.shift()
    entry.latency = await this.latencyCounts()
  }

  /**
   * Percentiles (milliseconds, 0.01 ms precision) of the latencies observed since the oldest sample: the difference of
   * the histogram's cumulative bucket counts, interpolated linearly within a bucket as Prometheus' histogram_quantile
   * does (the top finite bound when one falls in +Inf). Null when nothing was observed in the window.
   */
  private async latencyPercentiles (qs: number[]): Promise<Array<number | null>> {
    const bounds = this.services.latency?.bounds
    const now = await this.latencyCounts()
    const first = this.samples[0]?.latency ?? []
    if (bounds === undefined || now.length !== bounds.length + 1) return qs.map(() => null)
    const counts = now.map((c, i) => c - (first[i] ?? 0))
    const total = counts[counts.length - 1]
    if (!(total > 0)) return qs.map(() => null)
    return qs.map((q) => {
      const rank = q * total
      let i = 0
      while (i < bounds.length && counts[i] < rank) i++
      if (i >= bounds.length) return Math.round(bounds[bounds.length - 1] * 100_000) / 100
      const lower = i === 0 ? 0 : bounds[i - 1]
      const below = i === 0 ? 0 : counts[i - 1]
      const inBucket = counts[i] - below
      const seconds = inBucket <= 0 ? bounds[i] : lower + (bounds[i] - lower) * (rank - below) / inBucket
      return Math.round(seconds * 100_000) / 100
    })
  }

  private deliveryRate (): number {
    const first = this.samples[0]
    const seconds = (Date.now() - first.at) / 1000
    return seconds <= 0 ? 0 : Math.round((this.delivered() - first.delivered) / seconds * 10) / 10
  }
}

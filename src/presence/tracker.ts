import type { Logger } from 'pino'
import type { PresenceChange, PresenceMember, PresenceStore } from './presence.js'
import type { Namespaces } from '../namespaces.js'
import { frame } from '../protocol/frames.js'

export interface TrackerOptions {
  store: PresenceStore
  namespaces: Namespaces
  log: Logger
  ttlSeconds: number
  /** Window over which join/leave changes are batched into one frame per subscriber. */
  batchMs: number
}

interface Pending { joins: Map<string, unknown>, leaves: Set<string> }

/**
 * This node's side of presence: joins and leaves its connections in the store, refreshes their entries so they
 * outlive no crash by more than the TTL, and turns the cluster's member-level changes into batched
 * `presence_diff` (or, for counts-only namespaces, `presence_count`) frames — one frame per window per channel,
 * serialised once for all local subscribers.
 */
export class PresenceTracker {
  /** channel -> client -> member, for the connections of this node */
  private readonly local = new Map<string, Map<string, PresenceMember>>()
  private readonly pending = new Map<string, Pending>()
  private readonly refresher: NodeJS.Timeout
  private flushTimer?: NodeJS.Timeout
  /** Sends a frame (already serialised) to every local subscriber of a channel: the hub, once it exists. */
  private broadcast: (channel: string, frame: string) => void = () => {}

  constructor (private readonly options: TrackerOptions) {
    options.store.setHandler((change) => this.onChange(change))
    this.refresher = setInterval(() => this.refreshAll(), Math.max(250, options.ttlSeconds * 1000 / 3)).unref()
  }

  get store (): PresenceStore { return this.options.store }

  setBroadcast (broadcast: (channel: string, frame: string) => void): void { this.broadcast = broadcast }

  enabled (channel: string): boolean { return this.options.namespaces.of(channel)?.presence === true }

  /** Adds a connection; resolves false when the channel's member cap refuses it. */
  async join (channel: string, member: PresenceMember): Promise<boolean> {
    const ns = this.options.namespaces.of(channel)
    let clients = this.local.get(channel)
    const first = clients === undefined
    if (clients === undefined) {
      clients = new Map()
      this.local.set(channel, clients)
    }
    clients.set(member.client, member)
    try {
      if (first && (ns?.joinLeave === true || ns?.presenceCountsOnly === true)) await this.options.store.watch(channel)
      const { full } = await this.options.store.join(channel, member, ns?.maxMembers ?? 0)
      if (full) { this.forget(channel, member); return false }
      return true
    } catch (err) {
      this.forget(channel, member)
      throw err
    }
  }

  leave (channel: string, member: PresenceMember): void {
    if (this.local.get(channel)?.has(member.client) !== true) return
    this.forget(channel, member)
    // If the store cannot be reached, the entry is not refreshed any more and expires within the TTL.
    this.options.store.leave(channel, member).catch((err: unknown) => {
      this.options.log.warn({ err: (err as Error).message, channel }, 'presence leave failed; the entry will expire')
    })
  }

  close (): void {
    clearInterval(this.refresher)
    clearTimeout(this.flushTimer)
  }

  private forget (channel: string, member: PresenceMember): void {
    const clients = this.local.get(channel)
    if (clients === undefined) return
    clients.delete(member.client)
    if (clients.size === 0) {
      this.local.delete(channel)
      this.pending.delete(channel)
      this.options.store.unwatch(channel).catch(() => {})
    }
  }

  private refreshAll (): void {
    for (const [channel, clients] of this.local) {
      this.options.store.refresh(channel, [...clients.values()]).catch((err: unknown) => {
        this.options.log.warn({ err: (err as Error).message, channel }, 'presence refresh failed')
      })
    }
  }

  private onChange (change: PresenceChange): void {
    if (!this.local.has(change.channel)) return
    // A connection-level change only moves the counts: it matters to counts-only namespaces alone.
    if (change.type === 'connections' && this.options.namespaces.of(change.channel)?.presenceCountsOnly !== true) return
    let p = this.pending.get(change.channel)
    if (p === undefined) {
      p = { joins: new Map(), leaves: new Set() }
      this.pending.set(change.channel, p)
    }
    // Within one window the last change of a sub wins, so the frame describes the state at its end.
    if (change.type === 'join') { p.leaves.delete(change.sub); p.joins.set(change.sub, change.info) } else if (change.type === 'leave') { p.joins.delete(change.sub); p.leaves.add(change.sub) }
    if (this.flushTimer === undefined) this.flushTimer = setTimeout(() => this.flush(), this.options.batchMs).unref()
  }

  private flush (): void {
    this.flushTimer = undefined
    const pending = [...this.pending]
    this.pending.clear()
    for (const [channel, p] of pending) {
      const ns = this.options.namespaces.of(channel)
      if (ns?.presenceCountsOnly === true) {
        this.options.store.count(channel).then((count) => {
          this.broadcast(channel, frame.presenceCount(channel, count))
        }, () => {})
        continue
      }
      const joins = [...p.joins].map(([sub, info]) => info === undefined ? { sub } : { sub, info })
      const leaves = [...p.leaves].map((sub) => ({ sub }))
      this.broadcast(channel, frame.presenceDiff(channel, joins, leaves))
    }
  }
}

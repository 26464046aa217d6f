import type { Logger } from 'pino'
import type { Announced, StateChange, StateKey, WebhookStore } from './webhook.js'

/** Most changes per store call (one Lua call each: long enough to batch a burst, short enough not to hold Redis). */
const BATCH = 500
/** Wait before reporting again after the store failed. */
const RETRY_MS = 1000

export interface TrackerOptions {
  store: WebhookStore
  nodeId: string
  log: Logger
  /** How often this node renews its liveness in the store (a third of the TTL after which it is reaped). */
  heartbeatMs: number
  /** How often this node runs the store's sweep (other nodes' debounce checks, reaping crashed nodes). */
  sweepMs: number
  /** What a store call announced (webhooks queued, dropped from a full queue). */
  announced: (result: Announced) => void
}

/**
 * This node's side of channel and user state: which keys it holds (a channel with a local subscriber, a subject
 * with a local session) and the changes not yet reported to the store. Reporting is off the hot path: a change is
 * a Set and a Map write; a timer sends the pending changes in batches, only the latest state per key. When the
 * store fails (Redis down), the changes stay pending (unless a newer one replaced them) and are sent again; so
 * whatever happens to Redis, the store ends up with what this node holds now.
 */
export class StateTracker {
  private readonly local = new Set<StateKey>()
  private pending = new Map<StateKey, boolean>()
  private member: string
  private incarnation = 0
  /** The store has seen this member (a later call that finds it missing means it was forgotten). */
  private known = false
  private beatDue = false
  private flushing?: Promise<void>
  private flushTimer?: NodeJS.Timeout
  private heartbeat?: NodeJS.Timeout
  private sweeper?: NodeJS.Timeout
  private dueTimer?: { at: number, timer: NodeJS.Timeout }
  private sweeping = false
  /** A sweep failed: once the store answers again, report at once (a failover may have lost this node's reports). */
  private sweepFailed = false
  private failing = false
  private closed = false

  constructor (private readonly options: TrackerOptions) {
    this.member = options.nodeId + '.0'
  }

  start (): void {
    this.heartbeat = setInterval(() => { this.beatDue = true; this.schedule(0) }, this.options.heartbeatMs).unref()
    this.sweeper = setInterval(() => { void this.sweep() }, this.options.sweepMs).unref()
    this.beatDue = true
    this.schedule(0)
    void this.sweep()
  }

  /** The node got its first holder of `key` (`up`) or lost its last. */
  change (key: StateKey, up: boolean): void {
    if (this.closed || up === this.local.has(key)) return
    if (up) this.local.add(key)
    else this.local.delete(key)
    this.pending.set(key, up)
    this.schedule(0)
  }

  /** Reports what is pending, then leaves the store for good (its keys are released by whoever sweeps next). */
  async close (): Promise<void> {
    this.closed = true
    clearTimeout(this.flushTimer)
    clearInterval(this.heartbeat)
    clearInterval(this.sweeper)
    clearTimeout(this.dueTimer?.timer)
    try {
      await this.flush()
      await this.options.store.retire(this.member)
    } catch (err) {
      this.options.log.warn({ err: (err as Error).message }, 'webhooks: could not report this node\'s last state; its keys are released when its liveness expires')
    }
  }

  private schedule (delay: number): void {
    if (this.flushTimer !== undefined || this.closed) return
    this.flushTimer = setTimeout(() => { this.flushTimer = undefined; this.flush().catch(() => {}) }, delay).unref()
  }

  /** One report at a time; a running one goes on while anything is pending. */
  private async flush (): Promise<void> {
    this.flushing ??= this.report().finally(() => { this.flushing = undefined })
    await this.flushing
  }

  private async report (): Promise<void> {
    while (this.pending.size > 0 || this.beatDue) {
      this.beatDue = false
      const batch: StateChange[] = []
      for (const [key, up] of this.pending) {
        if (batch.length >= BATCH) break
        batch.push({ key, up })
        this.pending.delete(key)
      }
      let result
      try {
        result = await this.options.store.update(this.member, this.known, batch, Date.now())
      } catch (err) {
        // Put back what no newer change replaced, and try again later.
        for (const { key, up } of batch) if (!this.pending.has(key)) this.pending.set(key, up)
        if (batch.length === 0) this.beatDue = true
        if (!this.failing) this.options.log.warn({ err: (err as Error).message, pending: this.pending.size }, 'webhooks: state report failed; retrying')
        this.failing = true
        if (!this.closed) this.schedule(RETRY_MS)
        else throw err
        return
      }
      if (this.failing) this.options.log.info('webhooks: state reports work again')
      this.failing = false
      if (result.forgotten) { this.rejoin(); continue }
      this.known = true
      this.options.announced(result)
      if (result.dueAt !== undefined) this.sweepAt(result.dueAt)
    }
  }

  /**
   * The store forgot this member (it stalled past its liveness deadline and was reaped, or Redis lost its data, or
   * a failover lost its last reports and the store retired it). Come back as a new member holding every local key:
   * the old member's keys are released by the reaper, and being a different member, the release cannot remove
   * what is reported now.
   */
  private rejoin (): void {
    this.member = `${this.options.nodeId}.${++this.incarnation}`
    this.known = false
    this.pending = new Map([...this.local].map((key) => [key, true]))
    this.options.log.warn({ member: this.member, keys: this.local.size }, 'webhooks: the store had forgotten this node (stalled past PRESENCE_TTL, or Redis lost its data or, in a failover, this node\'s last reports); reporting its state again')
  }

  /** A debounce check is due at `at`: sweep then (the periodic sweep is the fallback, and covers other nodes'). */
  private sweepAt (at: number): void {
    if (this.closed || (this.dueTimer !== undefined && this.dueTimer.at <= at)) return
    clearTimeout(this.dueTimer?.timer)
    const timer = setTimeout(() => { this.dueTimer = undefined; void this.sweep() }, Math.max(0, at - Date.now()) + 1).unref()
    this.dueTimer = { at, timer }
  }

  private async sweep (): Promise<void> {
    if (this.sweeping || this.closed) return
    this.sweeping = true
    try {
      for (;;) {
        const result = await this.options.store.sweep(Date.now())
        if (this.sweepFailed) {
          // The store is back after an outage (a failover, perhaps, that lost this node's last reports): a
          // heartbeat now finds out, rather than at the next one (up to PRESENCE_TTL / 3 away).
          this.sweepFailed = false
          this.beatDue = true
          this.schedule(0)
        }
        this.options.announced(result)
        if (result.nextDue !== undefined) this.sweepAt(result.nextDue)
        if (!result.more || this.closed) break
      }
    } catch (err) {
      this.sweepFailed = true
      // The periodic sweep tries again; the failure itself is the state reports' to log (same store, same outage).
      this.options.log.debug({ err: (err as Error).message }, 'webhooks: sweep failed')
    } finally {
      this.sweeping = false
    }
  }
}

import type { Clock, TimerHandle } from './clock.js'
import { Backoff } from './backoff.js'
import { ConnectionStateMachine, type ConnectionState, type StateChange } from './state.js'

/**
 * How soon to try again after a loss:
 * - `backoff`: the next full-jitter backoff delay (counts a failed attempt);
 * - `jitter`: at once but spread over [0, backoff.min) — the server asked us to go elsewhere (1012 draining);
 * - `now`: immediately (a fresh token was fetched, another transport is tried).
 */
export type RetryMode = 'backoff' | 'jitter' | 'now'

export interface RetryInfo { attempt: number, delay: number, reason: string }

export interface ReconnectorOptions {
  clock: Clock
  backoff: Backoff
  /** A connection that stays up this long resets the backoff (ms). */
  stableAfter: number
  /** Starts one connection attempt; its outcome is reported with `connected()` or `lost()`. */
  connect: () => void
  onChange?: (change: StateChange) => void
  onRetry?: (info: RetryInfo) => void
}

/**
 * The connection state machine plus its timing: when to attempt, how long to back off, when a connection counts as
 * stable. It knows nothing of transports, so it is tested with a fake clock.
 */
export class Reconnector {
  readonly machine = new ConnectionStateMachine()
  private retryTimer: TimerHandle | undefined
  private stableTimer: TimerHandle | undefined

  constructor (private readonly options: ReconnectorOptions) {
    if (options.onChange !== undefined) this.machine.on('change', options.onChange)
  }

  get state (): ConnectionState { return this.machine.state }

  /** disconnected -> connecting, and the first attempt. */
  start (reason = 'connect'): void {
    if (this.state !== 'disconnected') return
    this.machine.transition('connecting', reason)
    this.options.connect()
  }

  /** An attempt succeeded. After `stableAfter` ms more the backoff is reset. */
  connected (reason = 'open'): void {
    if (this.state === 'closed') return
    this.clearRetry()
    if (this.state !== 'connected') this.machine.transition('connected', reason)
    const { clock } = this.options
    if (this.stableTimer !== undefined) clock.clearTimeout(this.stableTimer)
    this.stableTimer = clock.setTimeout(() => {
      this.stableTimer = undefined
      this.options.backoff.reset()
    }, this.options.stableAfter)
  }

  /** An attempt failed or the connection was lost: become `reconnecting` and schedule the next attempt. */
  lost (reason: string, mode: RetryMode = 'backoff'): number | undefined {
    if (this.state === 'closed' || this.state === 'disconnected') return undefined
    const { clock, backoff } = this.options
    if (this.stableTimer !== undefined) { clock.clearTimeout(this.stableTimer); this.stableTimer = undefined }
    if (this.state !== 'reconnecting') this.machine.transition('reconnecting', reason)
    this.clearRetry()
    const delay = mode === 'backoff' ? backoff.next() : mode === 'jitter' ? Math.floor(clock.random() * backoff.min) : 0
    this.options.onRetry?.({ attempt: backoff.attempts, delay, reason })
    this.retryTimer = clock.setTimeout(() => {
      this.retryTimer = undefined
      if (this.state === 'reconnecting') this.options.connect()
    }, delay)
    return delay
  }

  /** Final: no attempt after this. Returns false when already closed. */
  close (reason: string): boolean {
    if (this.state === 'closed') return false
    this.clearRetry()
    if (this.stableTimer !== undefined) { this.options.clock.clearTimeout(this.stableTimer); this.stableTimer = undefined }
    this.machine.transition('closed', reason)
    return true
  }

  /** Whether an attempt is scheduled. */
  get pending (): boolean { return this.retryTimer !== undefined }

  private clearRetry (): void {
    if (this.retryTimer !== undefined) { this.options.clock.clearTimeout(this.retryTimer); this.retryTimer = undefined }
  }
}

import type { Clock, TimerHandle } from './clock.js'

export interface HeartbeatOptions {
  /** Send a ping when nothing was sent for this long (ms). */
  interval: number
  /** Declare the connection dead when nothing was received for this long (ms). */
  timeout: number
  /** Sends an application-level ping (WebSocket `ping` frame); absent for SSE, whose server sends comments. */
  ping?: () => void
  dead: () => void
}

/**
 * Notices a dead connection without waiting for TCP: every received byte is `activity()`; `ping` is sent every
 * `interval`; no activity for `timeout` calls `dead` once. One timer, re-armed at most every interval / 2.
 */
export class Heartbeat {
  private lastActivity = 0
  private lastPing = 0
  private timer: TimerHandle | undefined
  private stopped = true

  constructor (private readonly clock: Clock, private readonly options: HeartbeatOptions) {}

  start (): void {
    this.stopped = false
    this.lastActivity = this.lastPing = this.clock.now()
    this.schedule()
  }

  activity (): void { this.lastActivity = this.clock.now() }

  stop (): void {
    this.stopped = true
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer)
    this.timer = undefined
  }

  private schedule (): void {
    const { interval, timeout } = this.options
    const now = this.clock.now()
    const nextPing = this.options.ping === undefined ? Infinity : this.lastPing + interval
    const deadline = this.lastActivity + timeout
    const wait = Math.max(1, Math.min(nextPing, deadline) - now)
    this.timer = this.clock.setTimeout(() => this.tick(), wait)
  }

  private tick (): void {
    this.timer = undefined
    if (this.stopped) return
    const now = this.clock.now()
    if (now - this.lastActivity >= this.options.timeout) {
      this.stopped = true
      this.options.dead()
      return
    }
    if (this.options.ping !== undefined && now - this.lastPing >= this.options.interval) {
      this.lastPing = now
      this.options.ping()
    }
    if (!this.stopped) this.schedule()
  }
}

import { systemClock } from './clock.js'

export interface BackoffOptions {
  /** Ceiling of the first delay, ms (default 500). */
  min?: number
  /** Largest ceiling, ms (default 30000). */
  max?: number
  /** Growth of the ceiling per failed attempt (default 2). */
  factor?: number
}

/**
 * Exponential backoff with FULL jitter (AWS architecture blog, "Exponential Backoff And Jitter"): attempt n waits
 * a uniformly random time in [0, min(max, min × factorⁿ)). Spreading reconnects over the whole window keeps a
 * restarted server from being hit by every client at the same instant. `reset()` after a stable connection.
 */
export class Backoff {
  readonly min: number
  readonly max: number
  readonly factor: number
  /** Failed attempts since the last reset. */
  attempts = 0

  constructor (options: BackoffOptions = {}, private readonly random: () => number = systemClock.random) {
    this.min = options.min ?? 500
    this.max = options.max ?? 30_000
    this.factor = options.factor ?? 2
    if (!(this.min > 0) || !Number.isFinite(this.min)) throw new RangeError('backoff.min must be a positive number of ms')
    if (!(this.max >= this.min) || !Number.isFinite(this.max)) throw new RangeError('backoff.max must be a number of ms, at least backoff.min')
    if (!(this.factor >= 1) || !Number.isFinite(this.factor)) throw new RangeError('backoff.factor must be at least 1')
  }

  /** Upper bound (exclusive) of the delay of attempt `attempt` (default: the next one). */
  ceiling (attempt = this.attempts): number {
    return Math.min(this.max, this.min * Math.pow(this.factor, attempt))
  }

  /** The next delay in ms, uniform in [0, ceiling); counts an attempt. */
  next (): number {
    const delay = Math.floor(this.random() * this.ceiling())
    this.attempts++
    return delay
  }

  reset (): void { this.attempts = 0 }
}

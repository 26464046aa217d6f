/**
 * Time and randomness, injected so that backoff, heartbeats, token refresh and reconnection can be tested with a
 * fake clock. The default is the real one.
 */
export type TimerHandle = unknown

export interface Clock {
  now: () => number
  setTimeout: (fn: () => void, ms: number) => TimerHandle
  clearTimeout: (handle: TimerHandle) => void
  /** Uniform in [0, 1): used for jitter. */
  random: () => number
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => { clearTimeout(handle as ReturnType<typeof setTimeout>) },
  random: () => Math.random()
}

/** A promise resolved after `ms` on `clock`. */
export async function sleep (clock: Clock, ms: number): Promise<void> {
  await new Promise<void>((resolve) => { clock.setTimeout(resolve, ms) })
}

/** Timers and waits that can all be cancelled at once (the client's retries, cancelled by close()). */
export class Timers {
  private readonly timers = new Set<TimerHandle>()
  private readonly waits = new Set<() => void>()

  constructor (private readonly clock: Clock) {}

  /** Calls `fn` after `ms`, unless cancelled. */
  later (fn: () => void, ms: number): void {
    const timer = this.clock.setTimeout(() => { this.timers.delete(timer); fn() }, ms)
    this.timers.add(timer)
  }

  /** Waits `ms`, or less if cancelled meanwhile. */
  async pause (ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const wake = (): void => { this.waits.delete(wake); this.clock.clearTimeout(timer); resolve() }
      const timer = this.clock.setTimeout(wake, ms)
      this.waits.add(wake)
    })
  }

  /** Drops the pending timers and ends the waits at once. */
  cancel (): void {
    for (const timer of this.timers) this.clock.clearTimeout(timer)
    this.timers.clear()
    for (const wake of [...this.waits]) wake()
  }
}

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

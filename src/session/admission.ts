/** A token bucket: `rate` tokens per second, at most `burst` saved up. */
export class TokenBucket {
  private tokens: number
  private last = Date.now()

  constructor (private readonly rate: number, private readonly burst: number) {
    this.tokens = burst
  }

  take (now = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.rate / 1000)
    this.last = now
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }
}

/** Most keys (client IPs, subjects) a keyed limiter remembers; past it, the least recently seen are forgotten. */
export const MAX_KEYS = 100_000

/** One token bucket per key (client IP, token subject), bounded in keys. */
export class KeyedBuckets {
  private readonly buckets = new Map<string, TokenBucket>()

  constructor (private readonly rate: number, private readonly burst: number, private readonly maxKeys = MAX_KEYS) {}

  get size (): number { return this.buckets.size }

  take (key: string, now = Date.now()): boolean {
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string)
      bucket = new TokenBucket(this.rate, this.burst)
    } else {
      this.buckets.delete(key) // to the back: the most recently seen
    }
    this.buckets.set(key, bucket)
    return bucket.take(now)
  }
}

/** Counts per key in fixed windows (failed authentications per client IP), bounded in keys. */
export class KeyedCounter {
  private readonly counts = new Map<string, { n: number, resetAt: number }>()

  constructor (private readonly max: number, private readonly windowMs: number, private readonly maxKeys = MAX_KEYS) {}

  get size (): number { return this.counts.size }

  /** Milliseconds until the key may try again, or 0 when it is under its limit. */
  blockedFor (key: string, now = Date.now()): number {
    const entry = this.counts.get(key)
    if (entry === undefined || now >= entry.resetAt) return 0
    return entry.n >= this.max ? entry.resetAt - now : 0
  }

  add (key: string, now = Date.now()): void {
    let entry = this.counts.get(key)
    if (entry === undefined || now >= entry.resetAt) {
      this.counts.delete(key)
      if (this.counts.size >= this.maxKeys) this.counts.delete(this.counts.keys().next().value as string)
      entry = { n: 0, resetAt: now + this.windowMs }
      this.counts.set(key, entry)
    }
    entry.n++
  }
}

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

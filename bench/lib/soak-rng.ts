/**
 * A tiny seeded PRNG (mulberry32) for the soak benchmark, so that one seed gives the same sequence of decisions
 * (which channels, how long a client stays, who pauses). The interleaving with the network is not deterministic,
 * so a run is repeatable in its plan, not byte for byte.
 */
export class Rng {
  private state: number

  constructor (readonly seed: number) {
    this.state = seed >>> 0
  }

  /** A float in [0, 1). */
  next (): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** An integer in [lo, hi] (both included). */
  int (lo: number, hi: number): number { return lo + Math.floor(this.next() * (hi - lo + 1)) }

  /** A float in [lo, hi). */
  between (lo: number, hi: number): number { return lo + this.next() * (hi - lo) }

  chance (p: number): boolean { return this.next() < p }

  pick<T> (items: readonly T[]): T { return items[Math.floor(this.next() * items.length)] }

  /** `n` distinct items (or all of them when there are fewer). */
  sample<T> (items: readonly T[], n: number): T[] {
    const copy = items.slice()
    const out: T[] = []
    while (out.length < n && copy.length > 0) out.push(copy.splice(Math.floor(this.next() * copy.length), 1)[0])
    return out
  }

  /** A child generator with its own stream, derived from this one (one per client slot). */
  fork (): Rng { return new Rng(Math.floor(this.next() * 4294967296)) }
}

/** A seed from the clock when none is given. */
export function randomSeed (): number {
  return (Date.now() ^ (process.pid << 16)) >>> 0
}

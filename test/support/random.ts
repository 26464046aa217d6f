/**
 * Seeded randomness for tests. Anything random a test does (delays between publishes, orders, picks) comes from
 * `seededRandom(seed)` with the seed shown in the test's name, so a failing run can be replayed exactly:
 * run it again with HERALD_TEST_SEED=<the seed in its name> (or with nothing set: the seeds are fixed).
 */

/** mulberry32: a tiny, fast 32-bit PRNG; the same seed always gives the same sequence of floats in [0, 1). */
export function seededRandom (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The seed a test uses: `fallback` (fixed in the test), unless HERALD_TEST_SEED gives another one to try or replay. */
export function testSeed (fallback: number): number {
  const env = process.env.HERALD_TEST_SEED
  if (env === undefined || env.trim() === '') return fallback >>> 0
  const seed = Number(env)
  if (!Number.isInteger(seed)) throw new Error(`HERALD_TEST_SEED must be an integer, not ${JSON.stringify(env)}`)
  return seed >>> 0
}

/** An integer in [0, max) from `random`. */
export function randomInt (random: () => number, max: number): number {
  return Math.floor(random() * max)
}

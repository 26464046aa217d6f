import type { FloorResult, RunResult } from './scenarios.js'

/**
 * Rounds of the fixed-rate scenarios whose CPU per delivery the targets compare (1 and 8). On a shared machine a
 * neighbour can take CPU for a minute at a time without any steal being reported (the VM's clock bills it to
 * whatever ran), and one server's run falls in such a stretch while the next one's does not: the same code has
 * measured 0.85–1.50× bare ws from one round to the next here. So those scenarios run in rounds, the servers in a
 * rotated order each round, and each server's row is its median round.
 */

/** One round's figures, kept with the server's median round (RunResult.rounds). */
export interface RoundFigures {
  round: number
  ok: boolean
  serverUsPerDelivery: number | null
  p99Ms: number | null
  lost: number
  duplicates: number
  error?: string
}

/** The order of the servers in round `round` (0-based): the list rotated by that many places. */
export function rotated<T> (list: T[], round: number): T[] {
  if (list.length === 0) return []
  const k = round % list.length
  return [...list.slice(k), ...list.slice(0, k)]
}

const byCpu = (a: RunResult, b: RunResult): number => (a.serverUsPerDelivery ?? Number.POSITIVE_INFINITY) - (b.serverUsPerDelivery ?? Number.POSITIVE_INFINITY)

/**
 * One server's rounds of one scenario (in the order they ran) as one result: its median round by CPU per delivery
 * (the lower middle one of an even count), with every round's figures in `rounds`. An event lost or duplicated in
 * any round stays counted (`lost` and `duplicates` are summed over the rounds that completed), and a round that
 * failed is named in a warning; only when every round failed is the result a failure (the first one's).
 */
export function combineRounds (runs: RunResult[]): RunResult {
  if (runs.length === 0) throw new Error('combineRounds: no runs')
  if (runs.length === 1) return runs[0]
  const rounds: RoundFigures[] = runs.map((r, i) => ({
    round: i + 1,
    ok: r.ok,
    serverUsPerDelivery: r.ok ? r.serverUsPerDelivery ?? null : null,
    p99Ms: r.ok ? r.latency?.p99 ?? null : null,
    lost: r.lost ?? 0,
    duplicates: r.duplicates ?? 0,
    ...(r.ok ? {} : { error: r.error ?? 'failed' })
  }))
  const done = runs.filter((r) => r.ok)
  if (done.length === 0) return { ...runs[0], rounds }
  const median = [...done].sort(byCpu)[Math.floor((done.length - 1) / 2)]
  const failed = rounds.filter((r) => !r.ok).map((r) => `round ${r.round} of ${runs.length} failed (${(r.error ?? '').slice(0, 80)}); the row is the median of the others`)
  return {
    ...median,
    lost: done.reduce((n, r) => n + (r.lost ?? 0), 0),
    duplicates: done.reduce((n, r) => n + (r.duplicates ?? 0), 0),
    offsetGaps: done.reduce((n, r) => n + (r.offsetGaps ?? 0), 0),
    warnings: [...new Set([...done.flatMap((r) => r.warnings), ...failed])],
    rounds
  }
}

/** The floor's rounds of one scenario as one: the median by CPU per write, with every round's figure. */
export function combineFloors (floors: FloorResult[]): FloorResult {
  if (floors.length === 0) throw new Error('combineFloors: no floors')
  if (floors.length === 1) return floors[0]
  const median = [...floors].sort((a, b) => a.serverUs - b.serverUs)[Math.floor((floors.length - 1) / 2)]
  return { ...median, rounds: floors.map((f) => f.serverUs) }
}

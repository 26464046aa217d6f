import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from './helper.js'
import { combineFloors, combineRounds, rotated } from '../bench/lib/rounds.js'
import { markdownResults, type BenchResults } from '../bench/lib/docs.js'
import type { FloorResult, RunResult } from '../bench/lib/scenarios.js'

/**
 * Scenarios 1 and 8 run in rounds (bench/lib/rounds.ts): the servers rotate, each row is a server's median round,
 * and nothing a round saw is hidden by the median (losses are summed, a failed round is named).
 */

const run = (peer: RunResult['peer'], us: number | null, extra: Partial<RunResult> = {}): RunResult => ({
  scenario: 'latency-20k',
  peer,
  ok: us !== null,
  seconds: 45,
  connections: 10_000,
  ready: 10_000,
  failed: 0,
  latency: { count: 1000, p50: 1, p90: 2, p99: us ?? 0, p999: 5, max: 9, mean: 1.5 },
  deliveredPerSec: 20_000,
  lost: 0,
  duplicates: 0,
  offsetGaps: 0,
  serverUsPerDelivery: us,
  warnings: [],
  ...(us === null ? { error: 'hard cap reached' } : {}),
  ...extra
})

test('rounds: the servers rotate, so none always runs first', () => {
  assert.deepEqual(rotated(['a', 'b', 'c'], 0), ['a', 'b', 'c'])
  assert.deepEqual(rotated(['a', 'b', 'c'], 1), ['b', 'c', 'a'])
  assert.deepEqual(rotated(['a', 'b', 'c'], 4), ['b', 'c', 'a'])
  assert.deepEqual(rotated([], 2), [])
})

test('rounds: a server\'s row is its median round; losses of any round are summed; a failed round is named, not dropped silently', () => {
  const one = run('herald-memory', 17)
  assert.equal(combineRounds([one]), one, 'a single round is the result as it is')
  const three = combineRounds([run('herald-memory', 21.4), run('herald-memory', 17.8, { lost: 2 }), run('herald-memory', 18.1, { duplicates: 1 })])
  assert.equal(three.serverUsPerDelivery, 18.1)
  assert.equal(three.latency?.p99, 18.1, 'the median round\'s own figures, not a mix')
  assert.equal(three.lost, 2)
  assert.equal(three.duplicates, 1)
  assert.deepEqual(three.rounds?.map((r) => r.serverUsPerDelivery), [21.4, 17.8, 18.1])
  // An even count takes the lower middle one.
  assert.equal(combineRounds([run('bare-ws', 19), run('bare-ws', 16), run('bare-ws', 18), run('bare-ws', 30)]).serverUsPerDelivery, 18)
  const withFailure = combineRounds([run('herald-redis', 20), run('herald-redis', null), run('herald-redis', 22)])
  assert.equal(withFailure.ok, true)
  assert.equal(withFailure.serverUsPerDelivery, 20)
  assert.ok(withFailure.warnings.some((w) => /round 2 of 3 failed \(hard cap reached\)/.test(w)), withFailure.warnings.join('; '))
  assert.deepEqual(withFailure.rounds?.map((r) => r.ok), [true, false, true])
  const allFailed = combineRounds([run('herald-redis', null), run('herald-redis', null)])
  assert.equal(allFailed.ok, false)
  assert.equal(allFailed.rounds?.length, 2)
  assert.throws(() => combineRounds([]), /no runs/)
})

test('rounds: the floor is its median round; the docs list every round and Herald against bare ws round by round', () => {
  const floor = (us: number): FloorResult => ({ scenario: 'latency-20k', connections: 10_000, askedPerSec: 20_000, perSec: 19_990, serverUs: us, serverUserUs: 2, serverSystemUs: us - 2, readersUs: 3 })
  const f = combineFloors([floor(9.5), floor(9.1), floor(12)])
  assert.equal(f.serverUs, 9.5)
  assert.deepEqual(f.rounds, [9.5, 9.1, 12])
  const results: BenchResults = {
    mode: 'full',
    startedAt: '2026-12-01T11:00:00Z',
    finishedAt: '2026-12-01T11:20:00Z',
    command: 'npm run bench -- --only 8',
    machine: { nproc: 2, cpuModel: 'test', node: 'v20', kernel: 'k', memGiB: 24, fdSoft: 20_000, fdHard: 20_000, connectionCap: 19_700 },
    conditions: { loadavgStart: [0, 0, 0], loadavgEnd: [0, 0, 0], notes: [] },
    results: [
      combineRounds([run('herald-memory', 18), run('herald-memory', 20), run('herald-memory', 17)]),
      combineRounds([run('bare-ws', 16), run('bare-ws', 20), run('bare-ws', 17)])
    ],
    floor: [f]
  }
  const md = markdownResults(results)
  assert.match(md, /Run in 3 rounds, the servers in a rotated order each round/)
  assert.match(md, /Herald, in-process bus 18\.00 \/ 20\.00 \/ 17\.00; bare ws \+ ioredis 16\.00 \/ 20\.00 \/ 17\.00; floor 9\.50 \/ 9\.10 \/ 12\.00/)
  assert.match(md, /Against bare ws in the same round: Herald, in-process bus 1\.13× \/ 1\.00× \/ 1\.00×/)
})

test('npm run bench -- --rounds 2: scenario 8 against a real Herald twice, one row with both rounds, nothing lost; bad counts refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-rounds-'))
  try {
    const out = join(dir, 'rounds.json')
    const bench = (args: string[]): ReturnType<typeof spawnSync> =>
      spawnSync('npm', ['run', '--silent', 'bench', '--', ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, HERALD_BENCH_FDS: '1' } })
    const res = bench(['--quick', '--fresh', '--only', '8', '--peers', 'herald-memory', '--rounds', '2', '--no-floor', '--no-docs', '--out', out])
    assert.equal(res.status, 0, String(res.stderr).slice(-2000))
    assert.match(String(res.stderr), /\[S8 round 1\/2 herald-memory\]/)
    assert.match(String(res.stderr), /\[S8 round 2\/2 herald-memory\]/)
    const saved = JSON.parse(readFileSync(out, 'utf8')) as BenchResults
    assert.equal(saved.results.length, 1)
    const r = saved.results[0]
    assert.equal(r.ok, true, r.error)
    assert.equal(r.rounds?.length, 2)
    assert.ok(r.rounds!.every((x) => x.ok && x.lost === 0 && x.duplicates === 0), JSON.stringify(r.rounds))
    assert.equal(r.lost, 0)
    assert.equal(r.duplicates, 0)
    assert.ok(r.rounds!.some((x) => x.serverUsPerDelivery === r.serverUsPerDelivery), 'the row is one of its rounds')
    const bad = bench(['--quick', '--rounds', '0'])
    assert.notEqual(bad.status, 0)
    assert.match(String(bad.stderr), /--rounds needs a whole number from 1 to 20/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

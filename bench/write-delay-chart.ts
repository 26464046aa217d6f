/**
 * The WS_WRITE_DELAY_MS chart: what holding a socket's events costs in latency against what it saves in CPU per
 * delivery, from one run of scenario 6 with the write-delay peers:
 *
 *   npm run bench -- --only 6 --peers herald-redis,herald-redis-wd1,herald-redis-wd5,herald-redis-wd20,bare-ws --no-docs --out bench/results/wd.json
 *   npx tsx bench/write-delay-chart.ts bench/results/wd.json        # writes docs/write-delay.svg, prints the table
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { BenchResults } from './lib/docs.js'
import type { PeerId, RunResult } from './lib/scenarios.js'
import { mdTable } from './lib/soak-report.js'
import { chart, type Panel } from './lib/svg.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const DELAYS: Array<{ peer: PeerId, label: string }> = [
  { peer: 'herald-redis', label: '0 ms\n(default)' },
  { peer: 'herald-redis-wd1', label: '1 ms' },
  { peer: 'herald-redis-wd5', label: '5 ms' },
  { peer: 'herald-redis-wd20', label: '20 ms' },
  { peer: 'bare-ws', label: 'bare ws\n(reference)' }
]

const file = process.argv[2]
if (file === undefined) { process.stderr.write('usage: npx tsx bench/write-delay-chart.ts <results.json>\n'); process.exit(64) }
const r = JSON.parse(readFileSync(file, 'utf8')) as BenchResults
const run = (peer: PeerId): RunResult | undefined => r.results.find((x) => x.scenario === 'hot' && x.peer === peer && x.ok)
const rows = DELAYS.map((d) => ({ ...d, x: run(d.peer) })).filter((d) => d.x !== undefined)
if (rows.length === 0) { process.stderr.write(`${file} holds no scenario 6 runs of the write-delay peers\n`); process.exit(65) }

const base = run('herald-redis')?.serverUsPerDelivery ?? null
const panels: Panel[] = [
  {
    title: 'Latency it costs (publish to delivery)',
    unit: 'ms',
    log: true,
    series: [{ name: 'p50', color: '#3182bd' }, { name: 'p99', color: '#9ecae1' }],
    groups: rows.map((d) => ({ label: d.label, values: [d.x!.latency?.p50 ?? null, d.x!.latency?.p99 ?? null] }))
  },
  {
    title: 'CPU it saves (server, per delivery)',
    unit: 'µs of CPU',
    series: [{ name: 'server µs/delivery', color: '#e6550d' }],
    groups: rows.map((d) => ({ label: d.label, values: [d.x!.serverUsPerDelivery ?? null] })),
    note: 'Herald on the Redis bus, WS_WRITE_DELAY_MS = 0, 1, 5, 20; bare ws for reference'
  }
]
writeFileSync(join(ROOT, 'docs', 'write-delay.svg'), chart(`Scenario 6 (hot channels), WS_WRITE_DELAY_MS — ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC`, panels))
const fixed = (v: number | null | undefined, digits: number): string => v === null || v === undefined ? '—' : v.toFixed(digits)
process.stdout.write(mdTable(['WS_WRITE_DELAY_MS', 'p50 ms', 'p99 ms', 'µs CPU/delivery', 'vs 0 ms', 'deliveries/s', 'other cores'], rows.map((d) => {
  const x = d.x!
  const us = x.serverUsPerDelivery ?? null
  return [d.label.replace('\n', ' '), fixed(x.latency?.p50, 1), fixed(x.latency?.p99, 1), fixed(us, 2), us !== null && base !== null ? (us / base).toFixed(2) + '×' : '—', Math.round(x.deliveredPerSec ?? 0).toLocaleString('en-US'), fixed(x.otherCores, 2)]
}), ['l']) + '\n')
process.stdout.write('wrote docs/write-delay.svg\n')

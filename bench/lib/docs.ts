import { PEERS, SCENARIOS, type FloorResult, type PeerId, type RunResult, type ScenarioId } from './scenarios.js'
import { chart, type Panel } from './svg.js'
import { table } from './report.js'
import { STEAL_WARN_CORES } from './procs.js'

export interface BenchResults {
  mode: 'quick' | 'full'
  startedAt: string
  finishedAt: string
  command: string
  machine: { nproc: number, cpuModel: string, node: string, kernel: string, memGiB: number, fdSoft: number, fdHard: number, connectionCap: number }
  conditions: { loadavgStart: number[], loadavgEnd: number[], notes: string[] }
  /** The Herald under test: git commit, and whether src/ or routes/ had uncommitted changes. */
  herald?: { commit: string, subject: string, dirty: string[] }
  results: RunResult[]
  /** bench/floor.ts, run in the same run before the scenarios it bounds (1 and 8). */
  floor?: FloorResult[]
}

const label = (id: PeerId): string => PEERS.find((p) => p.id === id)?.label ?? id
const ms = (v: number | undefined): string => v === undefined ? '—' : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)
const num = (v: number | null | undefined, digits = 0): string => v === null || v === undefined || !Number.isFinite(v) ? '—' : v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const kib = (b: number | null | undefined): string => b === null || b === undefined ? '—' : (b / 1024).toFixed(1)
const mib = (b: number | null | undefined): string => b === null || b === undefined ? '—' : (b / 1048576).toFixed(0)

function get (r: BenchResults, s: ScenarioId, p: PeerId): RunResult | undefined {
  return r.results.find((x) => x.scenario === s && x.peer === p)
}

function floorOf (r: BenchResults, s: ScenarioId): FloorResult | undefined {
  return r.floor?.find((f) => f.scenario === s)
}

/** Row sets per scenario: [header, ...rows]; used for both the console and Markdown. */
export function scenarioTables (r: BenchResults): Array<{ id: ScenarioId, title: string, description: string, rows: string[][], notes: string[] }> {
  const out: Array<{ id: ScenarioId, title: string, description: string, rows: string[][], notes: string[] }> = []
  for (const sc of SCENARIOS) {
    const runs = sc.peers.map((p) => get(r, sc.id, p)).filter((x): x is RunResult => x !== undefined)
    if (runs.length === 0) continue
    const notes: string[] = []
    let rows: string[][]
    const failed = (x: RunResult): string[] => [label(x.peer), 'failed: ' + (x.error ?? 'unknown').slice(0, 120)]
    if (sc.kind === 'fixed') {
      rows = [['server', 'conns', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'deliveries/s', 'lost', 'dup', 'server µs CPU/delivery', 'server cores', 'redis µs/delivery', 'generator cores', 'other procs / steal cores']]
      for (const x of runs) {
        if (!x.ok || x.latency === undefined) { rows.push(failed(x)); continue }
        rows.push([label(x.peer), num(x.ready), ms(x.latency.p50), ms(x.latency.p90), ms(x.latency.p99), ms(x.latency.p999), ms(x.latency.max), num(x.deliveredPerSec),
          num(x.lost), num(x.duplicates), num(x.serverUsPerDelivery, 2), num(x.serverCores, 2), num(x.redisUsPerDelivery, 2), num(x.generatorCores, 2), num(x.otherCores, 2) + ' / ' + num(x.stealCores, 2)])
      }
      const f = floorOf(r, sc.id)
      if (f !== undefined) {
        rows.push(['floor: plain `net` writes (bench/floor.ts)', num(f.connections), '—', '—', '—', '—', '—', num(f.perSec), '—', '—', num(f.serverUs, 2), '—', '—', '—', '—'])
        notes.push(`The floor row is bench/floor.ts in this scenario's shape, run just before its servers: a plain \`net\` server writing a 230-byte buffer to ${num(f.connections)} loopback sockets at ${num(f.askedPerSec)} writes/s (no WebSocket, JSON or framework), ${f.serverUserUs.toFixed(2)} µs user + ${f.serverSystemUs.toFixed(2)} µs system per write.`)
      }
      const note = roundsNote(runs, f)
      if (note !== undefined) notes.push(note)
    } else if (sc.kind === 'stepped') {
      rows = [['server', 'max sustained deliveries/s', 'p99 ms there', 'server µs CPU/delivery there', 'steps: deliveries/s asked → measured, p99 ms (✓ pass / ✗ why) [cores used by other processes, when > 0.25; withheld by the hypervisor, when > 0.05]']]
      for (const x of runs) {
        if (!x.ok || x.steps === undefined) { rows.push(failed(x)); continue }
        const best = x.steps.filter((s) => s.pass).sort((a, b) => b.perSec - a.perSec)[0]
        // Steps and the session's stages are in the same order: the machine figures come from there.
        const other = (i: number): string => {
          const m = x.summary?.stages[i]?.machine
          const others = m !== undefined && m !== null && m.otherCores > 0.25 ? ` [others ${m.otherCores.toFixed(1)} cores]` : ''
          return others + (m !== undefined && m !== null && (m.stealCores ?? 0) > STEAL_WARN_CORES ? ` [steal ${m.stealCores.toFixed(2)} cores]` : '')
        }
        rows.push([label(x.peer), num(x.maxSustainedPerSec ?? null), best === undefined ? '—' : ms(best.p99), best === undefined ? '—' : num(best.usPerDelivery, 2),
          x.steps.map((s, i) => `${fmtK(s.targetPerSec)}→${fmtK(s.perSec)} ${ms(s.p99)}${s.pass ? ' ✓' : ' ✗ ' + s.why.replace('p99 ≥ 50 ms', 'p99')}${other(i)}`).join('; ')])
      }
    } else if (sc.kind === 'idle') {
      rows = [['server', 'connections', 'RSS before (MiB)', 'RSS idle with all connected (MiB)', 'KiB per connection']]
      for (const x of runs) {
        if (!x.ok) { rows.push(failed(x)); continue }
        rows.push([label(x.peer), num(x.ready), mib(x.rssBeforeBytes), mib(x.rssAfterBytes), kib(x.rssPerConnectionBytes)])
      }
    } else {
      rows = [['server', 'clients', 'subscribed', 'failed', 'all subscribed after (s)', 'connect p50 ms', 'connect p99 ms', 'to subscribed p99 ms']]
      for (const x of runs) {
        if (!x.ok) { rows.push(failed(x)); continue }
        rows.push([label(x.peer), num(x.connections), num(x.ready), num(x.failed), ((x.allSubscribedMs ?? 0) / 1000).toFixed(2), ms(x.connect?.p50), ms(x.connect?.p99), ms(x.subscribed?.p99)])
      }
    }
    // Competing load is shown per row (other procs cores) or per step; the other warnings are listed.
    for (const x of runs) for (const w of x.warnings) if (!/other processes on this machine/.test(w)) notes.push(`${label(x.peer)}: ${w}`)
    out.push({ id: sc.id, title: `${sc.number}. ${sc.title}`, description: sc.description, rows, notes })
  }
  return out
}

const us2 = (v: number | null): string => v === null ? 'failed' : v.toFixed(2)

/** What a scenario run in rounds (lib/rounds.ts) says of its rounds: each server's, the floor's, and Herald / bare ws round by round. */
function roundsNote (runs: RunResult[], floor: FloorResult | undefined): string | undefined {
  const inRounds = runs.filter((x) => (x.rounds?.length ?? 0) > 1)
  if (inRounds.length === 0) return undefined
  const n = Math.max(...inRounds.map((x) => x.rounds!.length))
  const each = inRounds.map((x) => `${label(x.peer)} ${x.rounds!.map((r) => us2(r.serverUsPerDelivery)).join(' / ')}`)
  if (floor?.rounds !== undefined) each.push(`floor ${floor.rounds.map((v) => v.toFixed(2)).join(' / ')}`)
  const bare = inRounds.find((x) => x.peer === 'bare-ws')?.rounds
  const paired = bare === undefined
    ? []
    : inRounds.filter((x) => x.peer.startsWith('herald-')).map((x) => `${label(x.peer)} ${x.rounds!.map((r, i) => {
      const b = bare[i]?.serverUsPerDelivery ?? null
      return r.serverUsPerDelivery === null || b === null ? '—' : (r.serverUsPerDelivery / b).toFixed(2) + '×'
    }).join(' / ')}`)
  return `Run in ${n} rounds, the servers in a rotated order each round (a shared machine's slow stretches then fall on each in turn); each row is that server's median round by CPU per delivery, with lost and duplicated events summed over every round. CPU per delivery by round, µs: ${each.join('; ')}.` +
    (paired.length > 0 ? ` Against bare ws in the same round: ${paired.join('; ')}.` : '')
}

function fmtK (v: number): string { return v >= 1000 ? (v / 1000).toFixed(v >= 10_000 ? 0 : 1) + 'k' : v.toFixed(0) }

/** Herald / peer ratios (lower is better for latency, CPU, memory and storm time; higher for throughput). */
export function ratioRows (r: BenchResults): string[][] {
  const rows: string[][] = [['Herald variant / peer', 'S1 p99 latency', 'S1 CPU per delivery', 'S8 p99 latency (20k/s)', 'S8 CPU per delivery (20k/s)', 'S2 max sustained deliveries/s', 'S3 memory per connection', 'S4 storm time', 'S7 hot channels max sustained']]
  for (const h of ['herald-redis', 'herald-memory'] as PeerId[]) {
    for (const p of ['bare-ws', 'socketio'] as PeerId[]) {
      const v = (s: ScenarioId, id: PeerId): RunResult | undefined => ok(r, s, id)
      rows.push([`${label(h)} / ${label(p)}`,
        ratio(v('latency', h)?.latency?.p99, v('latency', p)?.latency?.p99),
        ratio(v('latency', h)?.serverUsPerDelivery, v('latency', p)?.serverUsPerDelivery),
        ratio(v('latency-20k', h)?.latency?.p99, v('latency-20k', p)?.latency?.p99),
        ratio(v('latency-20k', h)?.serverUsPerDelivery, v('latency-20k', p)?.serverUsPerDelivery),
        ratio(v('max-throughput', h)?.maxSustainedPerSec, v('max-throughput', p)?.maxSustainedPerSec),
        ratio(v('idle-memory', h)?.rssPerConnectionBytes, v('idle-memory', p)?.rssPerConnectionBytes),
        ratio(v('storm', h)?.allSubscribedMs, v('storm', p)?.allSubscribedMs),
        ratio(v('hot-max', h)?.maxSustainedPerSec, v('hot-max', p)?.maxSustainedPerSec)])
    }
  }
  return rows
}

function ok (r: BenchResults, s: ScenarioId, id: PeerId): RunResult | undefined {
  const x = get(r, s, id)
  return x?.ok === true ? x : undefined
}

function ratio (a: number | null | undefined, b: number | null | undefined): string {
  return a === null || a === undefined || b === null || b === undefined || b === 0 || !Number.isFinite(a) || !Number.isFinite(b) ? '—' : (a / b).toFixed(2) + '×'
}

/** One target against this run. Its ratio is shown to three decimals, so a miss by a hair does not read as the bound. */
export interface TargetCheck { target: string, measured: string, pass: boolean | null }

const HERALDS: Array<{ id: PeerId, bus: string }> = [{ id: 'herald-redis', bus: 'Redis' }, { id: 'herald-memory', bus: 'in-process' }]

/** The targets of issue 15 (and the earlier ones still tracked), each on the Redis bus and on the in-process bus where it applies to both. */
export function targetChecks (r: BenchResults): TargetCheck[] {
  const v = (s: ScenarioId, id: PeerId): RunResult | undefined => ok(r, s, id)
  const checks: TargetCheck[] = []
  const add = (target: string, a: number | null | undefined, b: number | null | undefined, op: (a: number, b: number) => boolean, show: (a: number, b: number) => string): void => {
    if (a === null || a === undefined || b === null || b === undefined || !Number.isFinite(a) || !Number.isFinite(b)) { checks.push({ target, measured: 'not measured', pass: null }); return }
    checks.push({ target, measured: show(a, b), pass: op(a, b) })
  }
  const us = (a: number, b: number): string => `${a.toFixed(2)} vs ${b.toFixed(2)} µs (${(a / b).toFixed(3)}×)`
  const perSec = (a: number, b: number): string => `${num(a)} vs ${num(b)} /s (${(a / b).toFixed(3)}×)`
  const cpu = (s: ScenarioId, id: PeerId): number | null | undefined => v(s, id)?.serverUsPerDelivery
  for (const [s, name] of [['latency-20k', 'S8 (20,000/s)'], ['latency', 'S1 (50,000/s asked)']] as Array<[ScenarioId, string]>) {
    for (const h of HERALDS) add(`${name} server CPU per delivery ≤ bare ws, ${h.bus} bus`, cpu(s, h.id), cpu(s, 'bare-ws'), (a, b) => a <= b, us)
    for (const h of HERALDS) add(`${name} server CPU per delivery ≤ 1.25 × bench/floor.ts, ${h.bus} bus`, cpu(s, h.id), floorOf(r, s)?.serverUs, (a, b) => a <= 1.25 * b, us)
  }
  add('S8 (20,000/s) p99 < 10 ms, Redis bus', v('latency-20k', 'herald-redis')?.latency?.p99, 10, (a, b) => a < b, (a) => `${ms(a)} ms`)
  add('S1 (50,000/s asked) p99 < 10 ms, Redis bus', v('latency', 'herald-redis')?.latency?.p99, 10, (a, b) => a < b, (a) => `${ms(a)} ms`)
  add('S1 (50,000/s asked) p99 ≤ ½ × bare ws, Redis bus', v('latency', 'herald-redis')?.latency?.p99, v('latency', 'bare-ws')?.latency?.p99, (a, b) => a <= b / 2, (a, b) => `${ms(a)} vs ${ms(b)} ms (${(a / b).toFixed(3)}×)`)
  add('S1 server CPU per delivery ≤ 0.7 × Socket.IO, Redis bus', cpu('latency', 'herald-redis'), cpu('latency', 'socketio'), (a, b) => a <= 0.7 * b, us)
  const max = (s: ScenarioId, id: PeerId): number | null | undefined => v(s, id)?.maxSustainedPerSec
  for (const h of HERALDS) add(`S2 max sustained deliveries/s ≥ bare ws, ${h.bus} bus`, max('max-throughput', h.id), max('max-throughput', 'bare-ws'), (a, b) => a >= b, perSec)
  for (const h of HERALDS) add(`S2 max sustained deliveries/s ≥ 1.5 × Socket.IO, ${h.bus} bus`, max('max-throughput', h.id), max('max-throughput', 'socketio'), (a, b) => a >= 1.5 * b, perSec)
  add('S2 max sustained deliveries/s: in-process bus ≥ Redis bus', max('max-throughput', 'herald-memory'), max('max-throughput', 'herald-redis'), (a, b) => a >= b, perSec)
  for (const h of HERALDS) add(`S3 memory per idle connection ≤ 1.1 × bare ws, ${h.bus} bus`, v('idle-memory', h.id)?.rssPerConnectionBytes, v('idle-memory', 'bare-ws')?.rssPerConnectionBytes, (a, b) => a <= 1.1 * b, (a, b) => `${kib(a)} vs ${kib(b)} KiB (${(a / b).toFixed(3)}×)`)
  for (const h of HERALDS) add(`S9 SSE server CPU per delivery ≤ 1.2 × S8 WebSocket, ${h.bus} bus`, cpu('sse-20k', h.id), cpu('latency-20k', h.id), (a, b) => a <= 1.2 * b, us)
  for (const h of HERALDS) add(`S7 hot channels max sustained deliveries/s ≥ 1.5 × bare ws, ${h.bus} bus`, max('hot-max', h.id), max('hot-max', 'bare-ws'), (a, b) => a >= 1.5 * b, perSec)
  const heraldRuns = r.results.filter((x) => x.peer.startsWith('herald') && x.ok && x.lost !== undefined)
  const lost = heraldRuns.reduce((n, x) => n + (x.lost ?? 0) + (x.duplicates ?? 0), 0) + r.results.filter((x) => x.peer.startsWith('herald') && x.steps !== undefined).reduce((n, x) => n + x.steps!.filter((s) => s.pass).reduce((m, s) => m + s.lost, 0), 0)
  checks.push({ target: 'No event lost or duplicated (every Herald run within its limits)', measured: heraldRuns.length === 0 ? 'not measured' : `${lost} lost or duplicated`, pass: heraldRuns.length === 0 ? null : lost === 0 })
  return checks
}

export function consoleReport (r: BenchResults): string {
  const out: string[] = []
  for (const t of scenarioTables(r)) {
    out.push(`\n== ${t.title}\n${t.description}\n`)
    out.push(table(t.rows))
    if (t.notes.length > 0) out.push(t.notes.map((n) => '  ! ' + n).join('\n'))
  }
  out.push('\n== Ratios (Herald / peer)\n')
  out.push(table(ratioRows(r)))
  out.push('\n== Targets\n')
  out.push(table([['target', 'measured', 'result'], ...targetChecks(r).map((c) => [c.target, c.measured, c.pass === null ? '—' : c.pass ? 'met' : 'MISSED'])]))
  return out.join('\n')
}

function md (rows: string[][]): string {
  const esc = (c: string): string => c.replace(/\|/g, '\\|')
  return [
    '| ' + rows[0].map(esc).join(' | ') + ' |',
    '|' + rows[0].map((_, i) => i === 0 ? '---' : '---:').join('|') + '|',
    ...rows.slice(1).map((r) => '| ' + r.map(esc).join(' | ') + ' |')
  ].join('\n')
}

/** The generated part of docs/benchmarks.md (between the results markers). */
export function markdownResults (r: BenchResults): string {
  const m = r.machine
  const out: string[] = []
  out.push(`Run: ${r.mode} mode, ${r.startedAt} → ${r.finishedAt} (\`${r.command}\`).`)
  out.push('')
  out.push(`Machine: ${m.nproc} × ${m.cpuModel}, ${m.memGiB.toFixed(0)} GiB RAM, Linux ${m.kernel}, Node ${m.node}; open files limit ${m.fdSoft} (hard ${m.fdHard}), ` +
    `so the 20,000-connection scenarios ran with ${num(m.connectionCap)} connections. Server, Redis and load generator share the same ${m.nproc} cores.`)
  out.push('')
  if (r.herald !== undefined) {
    out.push(`Herald under test: commit \`${r.herald.commit.slice(0, 10)}\` (${r.herald.subject})` +
      (r.herald.dirty.length > 0 ? `, with uncommitted changes in ${r.herald.dirty.join(', ')}.` : '.'))
    out.push('')
  }
  out.push(`Load average at the start ${r.conditions.loadavgStart.map((v) => v.toFixed(2)).join(' / ')}, at the end ${r.conditions.loadavgEnd.map((v) => v.toFixed(2)).join(' / ')}.`)
  for (const n of r.conditions.notes) out.push('', n)
  for (const t of scenarioTables(r)) {
    out.push('', `### ${t.title}`, '', t.description, '', md(t.rows))
    if (t.notes.length > 0) out.push('', t.notes.map((n) => '- ' + n).join('\n'))
  }
  out.push('', '### Ratios (Herald / peer)', '', 'Lower is better except for throughput.', '', md(ratioRows(r)))
  out.push('', '### Targets', '', 'Issue 15\'s targets (and the earlier ones still tracked), each on the Redis bus and on the in-process bus where it applies to both; ratios are within this run.', '')
  out.push(md([['target', 'measured', 'result'], ...targetChecks(r).map((c) => [c.target, c.measured, c.pass === null ? '—' : c.pass ? 'met' : '**missed**'])]))
  return out.join('\n')
}

export function svgReport (r: BenchResults): string {
  const peers = PEERS.filter((p) => p.diagnostic !== true).map((p) => p.id)
  const groupLabel = (id: PeerId): string => label(id).replace(', ', ',\n').replace(' + ', ' +\n')
  const lat = (id: PeerId): RunResult | undefined => { const x = get(r, 'latency', id); return x?.ok === true ? x : undefined }
  const floorGroup = (sc: ScenarioId): Array<{ label: string, values: Array<number | null> }> => {
    const f = floorOf(r, sc)
    return f === undefined ? [] : [{ label: 'floor:\nplain net writes', values: [f.serverUs, null] }]
  }
  const panels: Panel[] = [
    {
      title: 'S1 latency, 50k deliveries/s asked (all saturated)',
      unit: 'ms',
      log: true,
      series: [{ name: 'p50', color: '#9ecae1' }, { name: 'p90', color: '#6baed6' }, { name: 'p99', color: '#3182bd' }, { name: 'p99.9', color: '#08519c' }],
      groups: peers.map((id) => ({ label: groupLabel(id), values: [lat(id)?.latency?.p50 ?? null, lat(id)?.latency?.p90 ?? null, lat(id)?.latency?.p99 ?? null, lat(id)?.latency?.p999 ?? null] }))
    },
    {
      title: 'S1 deliveries per second reached (50k asked)',
      unit: 'deliveries per second',
      series: [{ name: 'deliveries/s', color: '#74c476' }],
      groups: peers.map((id) => ({ label: groupLabel(id), values: [lat(id)?.deliveredPerSec ?? null] }))
    },
    {
      title: 'S2 max sustained deliveries/s (p99 < 50 ms)',
      unit: 'deliveries per second',
      series: [{ name: 'deliveries/s', color: '#31a354' }],
      groups: peers.map((id) => { const x = get(r, 'max-throughput', id); return { label: groupLabel(id), values: [x?.ok === true ? x.maxSustainedPerSec ?? null : null] } })
    },
    {
      title: 'S1 server CPU per delivered event',
      unit: 'µs of CPU',
      series: [{ name: 'server', color: '#e6550d' }, { name: 'redis-server', color: '#fdae6b' }],
      groups: [...peers.map((id) => ({ label: groupLabel(id), values: [lat(id)?.serverUsPerDelivery ?? null, lat(id)?.redisUsPerDelivery ?? null] })),
        ...floorGroup('latency')]
    },
    {
      title: 'S8 server CPU per delivered event at 20k deliveries/s',
      unit: 'µs of CPU',
      series: [{ name: 'server', color: '#e6550d' }, { name: 'redis-server', color: '#fdae6b' }],
      groups: [...peers.map((id) => { const x = ok(r, 'latency-20k', id); return { label: groupLabel(id), values: [x?.serverUsPerDelivery ?? null, x?.redisUsPerDelivery ?? null] } }),
        ...floorGroup('latency-20k')]
    },
    {
      title: 'S3 server memory per idle subscribed connection',
      unit: 'KiB',
      series: [{ name: 'KiB/connection', color: '#756bb1' }],
      groups: peers.map((id) => { const x = get(r, 'idle-memory', id); return { label: groupLabel(id), values: [x?.ok === true && x.rssPerConnectionBytes != null ? x.rssPerConnectionBytes / 1024 : null] } })
    },
    {
      title: 'S4 storm: seconds until all subscribed',
      unit: 'seconds',
      series: [{ name: 'seconds', color: '#969696' }],
      groups: peers.map((id) => { const x = get(r, 'storm', id); return { label: groupLabel(id), values: [x?.ok === true && x.allSubscribedMs !== undefined ? x.allSubscribedMs / 1000 : null] } }),
      note: 'dominated by SYN retries after listen-backlog overflow; varies from run to run'
    }
  ]
  return chart(`Herald vs Socket.IO vs bare ws — ${r.machine.nproc} cores, Node ${r.machine.node} (${r.startedAt.slice(0, 10)})`, panels)
}

export const RESULTS_START = '<!-- bench:results:start (generated by `npm run bench`; edit outside these markers) -->'
export const RESULTS_END = '<!-- bench:results:end -->'

/** Replaces the generated block of docs/benchmarks.md, keeping everything written around it. */
export function spliceDoc (existing: string | undefined, generated: string, template: string): string {
  const base = existing !== undefined && existing.includes(RESULTS_START) && existing.includes(RESULTS_END) ? existing : template
  const a = base.indexOf(RESULTS_START)
  const b = base.indexOf(RESULTS_END)
  return base.slice(0, a + RESULTS_START.length) + '\n\n' + generated + '\n\n' + base.slice(b)
}

/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`, e.g. `npm run bench -- --profile herald-redis --only 1`):
 * the functions with the most self time, and the project files with the most inclusive time.
 *
 *   npx tsx bench/profile-top.ts bench/results/profiles/herald-redis-latency-….cpuprofile [--top 30] [--window 15,40]
 *
 * --window from,to: only the samples taken that many seconds after the profile started (a steady-state stretch,
 * without start-up, connecting and shutdown). Idle time ("(idle)") is counted, so shares are of wall time.
 */
import { readFileSync } from 'node:fs'

interface Node { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number, children?: number[] }
interface Profile { nodes: Node[], startTime: number, endTime: number, samples: number[], timeDeltas: number[] }

const file = process.argv[2]
if (file === undefined) { process.stderr.write('usage: npx tsx bench/profile-top.ts <file.cpuprofile> [--top N]\n'); process.exit(2) }
const topAt = process.argv.indexOf('--top')
const top = topAt > 0 ? Number(process.argv[topAt + 1]) : 30
const windowAt = process.argv.indexOf('--window')
const [fromS, toS] = windowAt > 0 ? (process.argv[windowAt + 1] ?? '').split(',').map(Number) : [0, Number.POSITIVE_INFINITY]
if (!(fromS >= 0 && toS > fromS)) { process.stderr.write('--window needs from,to in seconds (from < to)\n'); process.exit(2) }
const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(prof.nodes.map((n) => [n.id, n]))
const parent = new Map<number, number>()
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

// Time per sample: the delta that follows it.
const selfUs = new Map<number, number>()
let at = 0
for (let i = 0; i < prof.samples.length; i++) {
  at += prof.timeDeltas[i] ?? 0
  if (at < fromS * 1e6 || at >= toS * 1e6) continue
  const dt = prof.timeDeltas[i + 1] ?? 0
  selfUs.set(prof.samples[i], (selfUs.get(prof.samples[i]) ?? 0) + dt)
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0)
const short = (url: string): string => {
  const u = url.replace(/^file:\/\//, '')
  const nm = u.lastIndexOf('/node_modules/')
  if (nm >= 0) return u.slice(nm + 1)
  return u.replace(/^.*\/(src|routes|bench)\//, '$1/')
}
const key = (n: Node): string => `${n.callFrame.functionName || '(anonymous)'}  ${short(n.callFrame.url)}${n.callFrame.url !== '' ? ':' + String(n.callFrame.lineNumber + 1) : ''}`

const self = new Map<string, number>()
const inclusive = new Map<string, number>()
const area = new Map<string, number>()
for (const [id, us] of selfUs) {
  const n = byId.get(id)!
  self.set(key(n), (self.get(key(n)) ?? 0) + us)
  const u = short(n.callFrame.url)
  const where = n.callFrame.url === '' ? (n.callFrame.functionName.startsWith('(') ? n.callFrame.functionName : '(native)') : u.startsWith('node_modules/') ? u.split('/').slice(0, u.startsWith('node_modules/@') ? 3 : 2).join('/') : u.startsWith('node:') ? 'node: ' + u.slice(5).split('/')[0] : u
  area.set(where, (area.get(where) ?? 0) + us)
  // inclusive: every distinct frame on the stack
  const seen = new Set<string>()
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = key(byId.get(cur)!)
    if (seen.has(k)) continue
    seen.add(k)
    inclusive.set(k, (inclusive.get(k) ?? 0) + us)
  }
}
const pct = (us: number): string => (us / total * 100).toFixed(1).padStart(5) + '%'
const print = (title: string, m: Map<string, number>, n: number, filter?: (k: string) => boolean): void => {
  process.stdout.write(`\n${title}\n`)
  for (const [k, us] of [...m.entries()].filter(([k]) => filter === undefined || filter(k)).sort((a, b) => b[1] - a[1]).slice(0, n)) {
    process.stdout.write(`${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}\n`)
  }
}
process.stdout.write(`${file}: ${(total / 1e6).toFixed(2)} s sampled${windowAt > 0 ? ` (${fromS}–${toS} s after the start)` : ''}\n`)
print('Self time by area (module / package)', area, 20)
print(`Top ${top} functions by self time`, self, top)
print('Project functions (src/, routes/) by inclusive time', inclusive, top, (k) => /\s(src|routes)\//.test(k))

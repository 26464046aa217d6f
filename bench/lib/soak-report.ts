import type { LoadWindow, SoakCounters } from './soak-load.js'
import { errorTotal } from './soak-load.js'
import type { ServerReading } from './soak-server.js'
import { FONT, esc, grid } from './svg.js'

/** One reading of the soak: Herald's figures and the load's counters at `t` seconds after the load started. */
export interface Sample {
  t: number
  phase: 'idle' | 'load' | 'after'
  server: ServerReading
  /** Herald's CPU use since the previous sample, % of one core. */
  cpuPct?: number
  counters: SoakCounters
  /** Publish round trips and the load process's event-loop delay over the interval that ends here. */
  window?: LoadWindow
}

export interface Trend {
  name: string
  unit: string
  baseline: number
  secondHalfMean: number
  delta: number
  slopePerMin: number
  verdict: 'flat' | 'growing' | 'shrinking' | 'unclear' | 'no data'
  rule: string
}

const MiB = 1048576

export function mib (bytes: number | undefined): number | undefined { return bytes === undefined ? undefined : bytes / MiB }

export function clientConnections (s: Sample): number {
  const c = s.server.connections
  return (c.websocket ?? 0) + (c.sse ?? 0) + (c['long-poll'] ?? 0)
}

/** Least-squares slope of y over x. */
export function slope (xs: number[], ys: number[]): number {
  const n = xs.length
  if (n < 2) return 0
  const mx = xs.reduce((a, b) => a + b, 0) / n
  const my = ys.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) { num += (xs[i] - mx) * (ys[i] - my); den += (xs[i] - mx) ** 2 }
  return den === 0 ? 0 : num / den
}

function mean (v: number[]): number { return v.length === 0 ? NaN : v.reduce((a, b) => a + b, 0) / v.length }

interface TrendSpec {
  name: string
  unit: string
  value: (s: Sample) => number | undefined
  /** |slope| per minute at or under this is flat. */
  slopeLimit: (baseline: number) => number
  /** |second-half mean - baseline| at or under this is flat. */
  deltaLimit: (baseline: number) => number
  ruleText: string
}

export const TREND_SPECS: TrendSpec[] = [
  {
    name: 'RSS', unit: 'MiB', value: (s) => mib(s.server.rssBytes),
    slopeLimit: () => 1, deltaLimit: (b) => Math.max(8, 0.1 * b),
    ruleText: 'flat when |slope| ≤ 1 MiB/min and the second-half mean is within max(8 MiB, 10%) of the baseline'
  },
  {
    name: 'heap used', unit: 'MiB', value: (s) => mib(s.server.heapUsedBytes),
    slopeLimit: () => 1, deltaLimit: (b) => Math.max(8, 0.1 * b),
    ruleText: 'flat when |slope| ≤ 1 MiB/min and the second-half mean is within max(8 MiB, 10%) of the baseline'
  },
  {
    name: 'open fds', unit: 'fds', value: (s) => s.server.fds,
    slopeLimit: (b) => Math.max(2, 0.02 * b), deltaLimit: (b) => Math.max(10, 0.15 * b),
    ruleText: 'flat when |slope| ≤ max(2, 2% of baseline)/min and the second-half mean is within max(10, 15%) of the baseline'
  },
  {
    name: 'fds minus client connections', unit: 'fds', value: (s) => s.server.fds === undefined ? undefined : s.server.fds - clientConnections(s),
    slopeLimit: (b) => Math.max(2, 0.02 * b), deltaLimit: (b) => Math.max(10, 0.15 * b),
    ruleText: 'descriptors not explained by open WebSocket/SSE/long-poll connections; same rule as open fds'
  },
  {
    name: 'Redis keys', unit: 'keys', value: (s) => s.server.redisKeys,
    slopeLimit: (b) => Math.max(50, 0.02 * b), deltaLimit: (b) => Math.max(100, 0.1 * b),
    ruleText: 'flat when |slope| ≤ max(50, 2% of baseline)/min and the second-half mean is within max(100, 10%) of the baseline'
  }
]

/**
 * Trends over the post-warm-up samples: baseline = mean of the first samples after the warm-up (up to 3),
 * compared with the mean of the second half; slope by least squares, per minute.
 */
export function trends (samples: Sample[], warmupS: number): { post: Sample[], list: Trend[] } {
  const post = samples.filter((s) => s.phase === 'load' && s.t >= warmupS)
  const list: Trend[] = []
  for (const spec of TREND_SPECS) {
    const pts = post.map((s) => ({ t: s.t, v: spec.value(s) })).filter((p): p is { t: number, v: number } => p.v !== undefined)
    if (pts.length < 2) {
      list.push({ name: spec.name, unit: spec.unit, baseline: NaN, secondHalfMean: NaN, delta: NaN, slopePerMin: NaN, verdict: 'no data', rule: spec.ruleText })
      continue
    }
    const k = Math.min(3, Math.max(1, Math.floor(pts.length / 4)))
    const baseline = mean(pts.slice(0, k).map((p) => p.v))
    const mid = (pts[0].t + pts[pts.length - 1].t) / 2
    const secondHalfMean = mean(pts.filter((p) => p.t >= mid).map((p) => p.v))
    const slopePerMin = slope(pts.map((p) => p.t / 60), pts.map((p) => p.v))
    const delta = secondHalfMean - baseline
    const sl = spec.slopeLimit(baseline)
    const dl = spec.deltaLimit(baseline)
    let verdict: Trend['verdict'] = 'unclear'
    if (Math.abs(slopePerMin) <= sl && Math.abs(delta) <= dl) verdict = 'flat'
    else if (slopePerMin > sl && delta > dl) verdict = 'growing'
    else if (slopePerMin < -sl && delta < -dl) verdict = 'shrinking'
    list.push({ name: spec.name, unit: spec.unit, baseline, secondHalfMean, delta, slopePerMin, verdict, rule: spec.ruleText })
  }
  return { post, list }
}

// ---------------------------------------------------------------- formatting

export function f1 (v: number | undefined, digits = 1): string {
  return v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits)
}

export function int (v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '–' : Math.round(v).toLocaleString('en-US')
}

export function mdTable (head: string[], rows: string[][], align: Array<'l' | 'r'> = []): string {
  const sep = head.map((_, i) => (align[i] ?? 'r') === 'l' ? '---' : '---:')
  return [head, sep, ...rows].map((r) => '| ' + r.join(' | ') + ' |').join('\n')
}

export function textTable (rows: string[][], align: Array<'l' | 'r'> = []): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((c, i) => (align[i] ?? 'r') === 'l' ? c.padEnd(widths[i]) : c.padStart(widths[i])).join('  ')).join('\n')
}

export function sampleRows (samples: Sample[]): { head: string[], rows: string[][] } {
  const head = ['t (s)', 'phase', 'RSS MiB', 'heap MiB', 'fds', 'ws', 'sse', 'poll', 'subs', 'Redis keys', 'CPU %', 'loop p99 ms', 'pub p99 ms', 'opened', 'closed', 'evictions seen', 'events rx', 'pub ok', 'pub failed', 'errors']
  const rows = samples.map((s) => {
    const c = s.counters
    return [
      String(Math.round(s.t)), s.phase, f1(mib(s.server.rssBytes)), f1(mib(s.server.heapUsedBytes)), int(s.server.fds),
      int(s.server.connections.websocket), int(s.server.connections.sse), int(s.server.connections['long-poll']), int(s.server.subscriptions),
      int(s.server.redisKeys), f1(s.cpuPct, 0), f1(s.server.lagP99Ms, 0), f1(s.window?.pubP99Ms, 0),
      int(c.wsOpened + c.sseOpened), int(c.wsClosed + c.sseClosed), int(c.evictionsSeen),
      int(c.events.websocket + c.events.sse + c.events['long-poll']), int(c.publishOk), int(c.publishFailed), int(errorTotal(c))
    ]
  })
  return { head, rows }
}

// ---------------------------------------------------------------- SVG line chart

export interface LineSeries { name: string, color: string, points: Array<[number, number]> }
export interface LinePanel { title: string, unit: string, series: LineSeries[], shadeTo?: number, xMax: number }

const PW = 520
const PH = 280
const PM = { top: 48, right: 16, bottom: 40, left: 64 }


function tickFmt (v: number): string {
  const a = Math.abs(v)
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M'
  if (a >= 1e4) return (v / 1e3).toFixed(0) + 'k'
  if (a >= 1e3) return (v / 1e3).toFixed(1) + 'k'
  if (a >= 10 || v === 0) return v.toFixed(0)
  return v.toFixed(1)
}

function niceStep (range: number, steps: number): number {
  const raw = range / steps
  const p = 10 ** Math.floor(Math.log10(raw))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p
  return 10 * p
}

function linePanel (p: LinePanel, x0: number, y0: number): string {
  const iw = PW - PM.left - PM.right
  const ih = PH - PM.top - PM.bottom
  const ys = p.series.flatMap((s) => s.points.map((pt) => pt[1]))
  const top = ys.length === 0 ? 1 : Math.max(...ys)
  const yStep = niceStep(Math.max(top * 1.1, 1e-9), 5)
  const yMax = Math.max(yStep, Math.ceil(top * 1.1 / yStep) * yStep)
  const xMax = Math.max(1, p.xMax)
  const minutes = xMax >= 300
  const xStep = minutes ? niceStep(xMax / 60, 6) * 60 : niceStep(xMax, 6)
  const sx = (x: number): number => x / xMax * iw
  const sy = (y: number): number => ih - y / yMax * ih
  const out: string[] = []
  out.push(`<g transform="translate(${x0},${y0})">`)
  out.push(`<rect x="0" y="0" width="${PW}" height="${PH}" fill="#ffffff" stroke="#dddddd"/>`)
  out.push(`<text x="${PW / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold" ${FONT}>${esc(p.title)}</text>`)
  out.push(`<text x="14" y="${PM.top + ih / 2}" text-anchor="middle" font-size="11" ${FONT} transform="rotate(-90 14 ${PM.top + ih / 2})">${esc(p.unit)}</text>`)
  out.push(`<g transform="translate(${PM.left},${PM.top})">`)
  if (p.shadeTo !== undefined && p.shadeTo > 0) {
    out.push(`<rect x="0" y="0" width="${sx(Math.min(p.shadeTo, xMax)).toFixed(1)}" height="${ih}" fill="#f1f1f1"/>`)
    out.push(`<text x="4" y="${ih - 4}" font-size="9" fill="#888888" ${FONT}>warm-up</text>`)
  }
  for (let y = 0; y <= yMax + 1e-9; y += yStep) {
    out.push(`<line x1="0" x2="${iw}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#eeeeee"/>`)
    out.push(`<text x="-6" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end" font-size="10" ${FONT}>${tickFmt(y)}</text>`)
  }
  for (let x = 0; x <= xMax + 1e-9; x += xStep) {
    out.push(`<line x1="${sx(x).toFixed(1)}" x2="${sx(x).toFixed(1)}" y1="${ih}" y2="${ih + 4}" stroke="#888888"/>`)
    out.push(`<text x="${sx(x).toFixed(1)}" y="${ih + 16}" text-anchor="middle" font-size="10" ${FONT}>${minutes ? tickFmt(x / 60) : tickFmt(x)}</text>`)
  }
  out.push(`<text x="${iw / 2}" y="${ih + 32}" text-anchor="middle" font-size="10" ${FONT}>${minutes ? 'minutes' : 'seconds'} since the load started</text>`)
  out.push(`<line x1="0" x2="${iw}" y1="${ih}" y2="${ih}" stroke="#888888"/><line x1="0" x2="0" y1="0" y2="${ih}" stroke="#888888"/>`)
  for (const s of p.series) {
    if (s.points.length === 0) continue
    const d = s.points.map((pt, i) => `${i === 0 ? 'M' : 'L'}${sx(pt[0]).toFixed(1)},${sy(pt[1]).toFixed(1)}`).join(' ')
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.8"/>`)
    for (const pt of s.points) out.push(`<circle cx="${sx(pt[0]).toFixed(1)}" cy="${sy(pt[1]).toFixed(1)}" r="2" fill="${s.color}"><title>${esc(`${s.name} at ${pt[0]} s: ${tickFmt(pt[1])} ${p.unit}`)}</title></circle>`)
  }
  out.push('</g>')
  let lx = PM.left
  for (const s of p.series) {
    out.push(`<rect x="${lx}" y="30" width="10" height="10" fill="${s.color}"/><text x="${lx + 14}" y="39" font-size="10" ${FONT}>${esc(s.name)}</text>`)
    lx += 24 + s.name.length * 6
  }
  out.push('</g>')
  return out.join('\n')
}

export function lineChart (title: string, panels: LinePanel[], columns = 2): string {
  return grid(title, panels.length, columns, PW, PH, (i, x, y) => linePanel(panels[i], x, y))
}

/** The soak plot: memory, descriptors, Redis keys and connections over the load phase. */
export function soakSvg (samples: Sample[], warmupS: number, durationS: number, title: string): string {
  const load = samples.filter((s) => s.phase !== 'after')
  const pts = (f: (s: Sample) => number | undefined): Array<[number, number]> =>
    load.map((s) => [Math.round(s.t), f(s)] as [number, number | undefined]).filter((p): p is [number, number] => p[1] !== undefined && Number.isFinite(p[1]))
  const xMax = durationS
  return lineChart(title, [
    { title: 'Herald memory', unit: 'MiB', xMax, shadeTo: warmupS, series: [{ name: 'RSS', color: '#1f77b4', points: pts((s) => mib(s.server.rssBytes)) }, { name: 'heap used', color: '#ff7f0e', points: pts((s) => mib(s.server.heapUsedBytes)) }] },
    { title: 'Herald open file descriptors', unit: 'count', xMax, shadeTo: warmupS, series: [{ name: 'open fds', color: '#2ca02c', points: pts((s) => s.server.fds) }, { name: 'client connections', color: '#9467bd', points: pts((s) => clientConnections(s)) }] },
    { title: 'Redis keys (DBSIZE)', unit: 'keys', xMax, shadeTo: warmupS, series: [{ name: 'keys', color: '#d62728', points: pts((s) => s.server.redisKeys) }] },
    { title: 'Connections by transport (herald_connections)', unit: 'connections', xMax, shadeTo: warmupS, series: [{ name: 'websocket', color: '#1f77b4', points: pts((s) => s.server.connections.websocket) }, { name: 'sse', color: '#ff7f0e', points: pts((s) => s.server.connections.sse) }, { name: 'long-poll', color: '#2ca02c', points: pts((s) => s.server.connections['long-poll']) }] }
  ])
}

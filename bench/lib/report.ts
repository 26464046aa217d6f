import type { LoadSummary, StageResult } from './session.js'
import { fmtErrors, fmtRate, mb } from './session.js'

const ms = (v: number): string => v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)
const int = (v: number): string => Math.round(v).toLocaleString('en-US')

/** Lays out rows as an aligned text table (first row is the header). */
export function table (rows: string[][], align: Array<'l' | 'r'> = []): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)))
  const line = (r: string[]): string => r.map((cell, c) => (align[c] ?? (c === 0 ? 'l' : 'r')) === 'l' ? (cell ?? '').padEnd(widths[c]) : (cell ?? '').padStart(widths[c])).join('  ').trimEnd()
  return [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n')
}

/** The human summary printed at the end of `npm run loadtest`. */
export function formatSummary (s: LoadSummary): string {
  const o = s.options
  const mix = o.mix.ws === 100 ? 'WebSocket' : `ws ${o.mix.ws}% / sse ${o.mix.sse}% / long-poll ${o.mix.poll}%`
  const out: string[] = []
  out.push(`herald-loadtest: ${o.protocol} at ${o.targets.join(', ')}`)
  out.push(`  ${int(o.connections)} connections (${mix}), ${o.rooms} rooms × ${o.subsPerConn} subscription(s) per connection, ` +
    `${o.rate} events/s via ${o.publishVia}, ${o.payload} B payload, ${o.duration}s measured after ${o.warmup}s warm-up; ` +
    `${s.generatorProcesses} generator process(es), ${o.sourceAddrs.length > 0 ? o.sourceAddrs.length + ' source address(es)' : 'default source address'}`)
  const c = s.connect
  const rows: string[][] = [['', 'value']]
  rows.push(['connections', `${int(c.ready)} subscribed, ${int(c.failed)} failed, all subscribed after ${ms(c.allSubscribedMs)} ms`])
  rows.push(['connect ms', `p50 ${ms(c.connectMs.p50)}  p99 ${ms(c.connectMs.p99)}  max ${ms(c.connectMs.max)}   (to subscribed: p50 ${ms(c.subscribedMs.p50)}  p99 ${ms(c.subscribedMs.p99)}  max ${ms(c.subscribedMs.max)})`])
  if (c.failed > 0) rows.push(['connect errors', fmtErrors(c.errors)])
  if (c.serverRssBefore !== null && c.serverRssAfter !== null) {
    rows.push(['server rss', `${mb(c.serverRssBefore)} before, ${mb(c.serverRssAfter)} connected` + (c.rssPerConnectionBytes !== null ? ` (${(c.rssPerConnectionBytes / 1024).toFixed(1)} KiB per connection)` : '')])
  }
  for (const st of s.stages) rows.push(...stageRows(st, s.stages.length > 1))
  out.push(table(rows, ['l', 'l']))
  const warnings = [...s.warnings, ...s.stages.flatMap((st) => st.warnings.map((w) => (s.stages.length > 1 ? st.label + ': ' : '') + w))]
  if (warnings.length > 0) out.push('warnings:\n' + warnings.map((w) => '  - ' + w).join('\n'))
  return out.join('\n')
}

function stageRows (st: StageResult, named: boolean): string[][] {
  const p = named ? st.label + ' ' : ''
  const d = st.deliveries
  const rows: string[][] = []
  rows.push([p + 'published', `${int(st.published.acked)} acked (${st.published.perSec.toFixed(1)}/s of ${st.targetRate}/s), ${int(st.published.failed)} failed`])
  rows.push([p + 'delivered', `${int(d.delivered)} of ${int(d.expected)} expected; ${fmtRate(d.perSec)}/s sustained (target ${fmtRate(d.targetPerSec)}/s); drained in ${d.drainMs} ms`])
  rows.push([p + 'loss', `lost ${int(d.lost)} (${d.subsWithLoss} subscriptions), duplicates ${int(d.duplicates)}, offset gaps ${int(d.offsetGaps)}, offset repeats ${int(d.offsetDuplicates)}, dropped connections ${d.droppedConnections}`])
  const l = st.latency
  rows.push([p + 'latency ms', `p50 ${ms(l.p50)}  p90 ${ms(l.p90)}  p99 ${ms(l.p99)}  p99.9 ${ms(l.p999)}  max ${ms(l.max)}  (n=${int(l.count)})`])
  if (st.server !== null) {
    rows.push([p + 'server', `${(st.server.cores * 100).toFixed(0)}% of a core, ${st.server.usPerDelivery.toFixed(2)} µs CPU per delivery, rss ${mb(st.server.rssBytes)} (${st.server.source})`])
  }
  for (const o of st.others) rows.push([p + o.name, `${(o.cores * 100).toFixed(0)}% of a core, ${o.usPerDelivery.toFixed(2)} µs CPU per delivery`])
  rows.push([p + 'generator', `${(st.generator.cores * 100).toFixed(0)}% of a core in total (per process: ${st.generator.perProcess.map((c) => (c * 100).toFixed(0) + '%').join(', ')}), event-loop lag p99 ${st.generator.lagP99Ms.toFixed(1)} ms`])
  if (st.machine !== null) rows.push([p + 'machine', `${st.machine.busyCores.toFixed(2)} cores busy, of which ${st.machine.otherCores.toFixed(2)} by other processes; ${(st.machine.stealCores ?? 0).toFixed(2)} withheld by the hypervisor (steal)`])
  if (Object.keys(st.errors).length > 0) rows.push([p + 'client errors', fmtErrors(st.errors)])
  return rows
}

import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { startHerald, startRedis, publish, WsClient } from '../helper.js'

/**
 * The metric names a real Herald serves at /metrics: Redis bus (so the bus's series exist), default metrics on
 * (event loop, heap, RSS, as `npm start` serves them), after a WebSocket subscribed and received a publication.
 * Histograms and summaries are listed by their family name and by each of their sample names (`_bucket`, …).
 */
export async function liveMetricNames (t: TestContext): Promise<Set<string>> {
  const redis = await startRedis(t)
  const { url, wsUrl } = await startHerald(t, { redisUrl: redis.url, options: { defaultMetrics: true } })
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  await ws.subscribe('m:dashboards')
  assert.equal((await publish(url, 'm:dashboards', { n: 1 })).status, 201)
  await ws.events('m:dashboards', 1)
  const res = await fetch(`${url}/metrics`)
  assert.equal(res.status, 200)
  const names = new Set<string>()
  for (const line of (await res.text()).split('\n')) {
    const type = /^# TYPE (\S+) \S+$/.exec(line)
    if (type !== null) names.add(type[1])
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line)
    if (sample !== null) names.add(sample[1])
  }
  return names
}

/** Series Prometheus makes up itself (not served by Herald) that rules and panels may use. */
export const PROMETHEUS_SERIES = new Set(['up'])

/**
 * The metric names a PromQL expression reads: every identifier outside string literals that is not followed by
 * `(` (a function or aggregation), not a keyword, and not a label name (inside `{…}` or a `by`/`on` list).
 */
export function metricNamesOf (expr: string): string[] {
  const code = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, '{}') // label matchers
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '') // label lists
    .replace(/\[[^\]]*\]/g, '[]') // ranges and subquery steps
    .replace(/\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?/g, '') // Grafana variables
  const keywords = new Set(['and', 'or', 'unless', 'offset', 'bool', 'inf', 'nan', 'Inf', 'NaN'])
  const names: string[] = []
  for (const m of code.matchAll(/(?<![a-zA-Z0-9_:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2] !== undefined || keywords.has(m[1])) continue
    names.push(m[1])
  }
  return names
}

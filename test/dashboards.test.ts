import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT, redisSkipReason } from './helper.js'
import { liveMetricNames, metricNamesOf, PROMETHEUS_SERIES } from './support/live-metrics.js'

/**
 * deploy/grafana/herald.json, the Grafana dashboard of docs/monitoring.md: an importable dashboard whose every
 * query reads metrics a real Herald serves.
 */

interface Panel { type: string, title: string, datasource?: { uid?: string }, targets?: Array<{ expr: string, datasource?: { uid?: string } }>, panels?: Panel[] }

const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy', 'grafana', 'herald.json'), 'utf8')) as {
  __inputs: Array<{ name: string, pluginId: string }>
  schemaVersion: number
  uid: string
  panels: Panel[]
  templating: { list: Array<{ name: string, query: string | { query: string } }> }
}

const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row')

/** Every PromQL expression of the dashboard, with where it is: panel targets and variable queries (label_values(expr, label)). */
function expressions (): Array<{ where: string, expr: string }> {
  const out = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr })))
  for (const v of dashboard.templating.list) {
    const query = typeof v.query === 'string' ? v.query : v.query.query
    const m = /^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$/.exec(query)
    out.push({ where: `variable $${v.name}`, expr: m !== null ? m[1] : query })
  }
  return out
}

test('the dashboard is an importable Grafana dashboard on a ${DS_PROMETHEUS} input', () => {
  assert.ok(dashboard.schemaVersion >= 39, `schemaVersion ${dashboard.schemaVersion}`)
  assert.equal(dashboard.uid, 'herald')
  assert.deepEqual(dashboard.__inputs.map((i) => [i.name, i.pluginId]), [['DS_PROMETHEUS', 'prometheus']])
  assert.ok(panels.length >= 20, `${panels.length} panels`)
  for (const p of panels) {
    assert.equal(p.datasource?.uid, '${DS_PROMETHEUS}', `datasource of "${p.title}"`)
    assert.ok((p.targets ?? []).length > 0, `"${p.title}" has queries`)
    for (const target of p.targets ?? []) {
      assert.equal(target.datasource?.uid, '${DS_PROMETHEUS}', `datasource of a query of "${p.title}"`)
      assert.match(target.expr, /\$instance/, `"${p.title}" follows the instance selector: ${target.expr}`)
    }
  }
  // What docs/monitoring.md promises the dashboard shows.
  const all = expressions().map((e) => e.expr).join('\n')
  for (const name of ['herald_connections', 'herald_subscriptions', 'herald_channels', 'herald_events_published_total', 'herald_events_delivered_total',
    'herald_delivery_latency_seconds_bucket', 'herald_evictions_total', 'herald_errors_total', 'herald_bus_reconnects_total', 'herald_bus_catchups_total',
    'herald_nodejs_eventloop_lag_p99_seconds', 'herald_process_resident_memory_bytes', 'herald_nodejs_heap_size_used_bytes', 'herald_outbox_bytes']) {
    assert.ok(metricNamesOf(all).includes(name), `the dashboard shows ${name}`)
  }
  assert.match(all, /histogram_quantile\(0\.99,/)
})

test('every metric the dashboard queries is in a real Herald\'s /metrics', { skip: redisSkipReason() }, async (t) => {
  const served = await liveMetricNames(t)
  for (const { where, expr } of expressions()) {
    const names = metricNamesOf(expr)
    assert.ok(names.length > 0, `${where} reads no metric: ${expr}`)
    for (const name of names) assert.ok(served.has(name) || PROMETHEUS_SERIES.has(name), `${where}: ${name} is not in /metrics (${expr})`)
  }
})

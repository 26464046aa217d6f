import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { ROOT, redisSkipReason } from './helper.js'
import { liveMetricNames, metricNamesOf, PROMETHEUS_SERIES } from './support/live-metrics.js'

/**
 * deploy/prometheus/alerts.yml: valid rules (promtool check rules), each alert unit-tested firing and not firing
 * (promtool test rules on alerts.test.yml), and every metric they read served by a real Herald.
 */

const RULES = join(ROOT, 'deploy', 'prometheus', 'alerts.yml')
const RULE_TESTS = join(ROOT, 'deploy', 'prometheus', 'alerts.test.yml')

/** Why promtool tests cannot run, or undefined when they can. Under CI=true a missing promtool is an error: .ci/run installs it. */
function promtoolSkipReason (): string | undefined {
  if (spawnSync('promtool', ['--version']).error === undefined) return undefined
  if (process.env.CI === 'true') throw new Error('promtool is not on PATH and CI=true: .ci/run must install prometheus')
  return 'promtool not found on PATH (apt-get install prometheus); skipping the promtool checks'
}

interface Rule { alert: string, expr: string, for?: string, labels?: Record<string, string>, annotations?: Record<string, string> }
const rules = (parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules)

function promtool (...args: string[]): void {
  const res = spawnSync('promtool', args, { cwd: ROOT, encoding: 'utf8' })
  assert.equal(res.status, 0, `promtool ${args.join(' ')}:\n${res.stdout}${res.stderr}`)
}

test('promtool check rules accepts the rules', { skip: promtoolSkipReason() }, () => {
  promtool('check', 'rules', RULES)
})

test('promtool test rules: every alert fires where it should and nowhere else', { skip: promtoolSkipReason() }, () => {
  promtool('test', 'rules', RULE_TESTS)
})

test('every alert waits (for:), has a severity, a summary and a description, and is unit-tested', () => {
  const tested = new Set((parse(readFileSync(RULE_TESTS, 'utf8')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string, exp_alerts: unknown[] }> }> }).tests
    .flatMap((t) => (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)))
  assert.ok(rules.length >= 9, `${rules.length} alerts`)
  for (const rule of rules) {
    assert.match(rule.alert, /^Herald[A-Z]\w+$/)
    assert.match(rule.for ?? '', /^\d+[smh]$/, `${rule.alert} has for:`)
    assert.ok(['warning', 'critical'].includes(rule.labels?.severity ?? ''), `${rule.alert} severity`)
    assert.ok((rule.annotations?.summary ?? '') !== '' && (rule.annotations?.description ?? '') !== '', `${rule.alert} summary and description`)
    assert.ok(tested.has(rule.alert), `${rule.alert} has a promtool test where it fires`)
  }
  const docs = readFileSync(join(ROOT, 'docs', 'monitoring.md'), 'utf8')
  for (const rule of rules) assert.ok(docs.includes(rule.alert), `docs/monitoring.md explains ${rule.alert}`)
})

test('every metric the alerts read is in a real Herald\'s /metrics', { skip: redisSkipReason() }, async (t) => {
  const served = await liveMetricNames(t)
  for (const rule of rules) {
    const names = metricNamesOf(rule.expr)
    assert.ok(names.length > 0, `${rule.alert} reads no metric`)
    for (const name of names) assert.ok(served.has(name) || PROMETHEUS_SERIES.has(name), `${rule.alert}: ${name} is not in /metrics (${rule.expr})`)
  }
})

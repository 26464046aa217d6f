import assert from 'node:assert/strict'
import { test } from 'node:test'
import { startHerald, startRedis, redisSkipReason, SECRET } from './helper.js'
import { resolveOptions, UsageError } from '../bench/lib/options.js'
import { runLoadtest, type LoadSummary } from '../bench/lib/session.js'
import { formatSummary } from '../bench/lib/report.js'
import { startBareWs } from '../bench/peers/bare-ws.js'

/** What `--json` prints must add up: everything acknowledged was delivered once, percentiles in order. */
function assertSane (json: string, connections: number): void {
  const s = JSON.parse(json) as LoadSummary
  assert.equal(s.tool, 'herald-loadtest')
  assert.equal(s.connect.ready, connections)
  assert.equal(s.connect.failed, 0)
  assert.equal(s.stages.length, 1)
  const st = s.stages[0]
  assert.equal(st.published.failed, 0, JSON.stringify(st.published.errors))
  assert.ok(st.published.acked > 0)
  const d = st.deliveries
  assert.ok(d.expected > 0)
  assert.equal(d.delivered, d.expected, `delivered ${d.delivered} of ${d.expected}`)
  assert.equal(d.lost, 0)
  assert.equal(d.duplicates, 0)
  assert.equal(d.offsetGaps, 0)
  assert.equal(d.offsetDuplicates, 0)
  assert.equal(d.droppedConnections, 0)
  assert.equal(d.complete, true)
  const l = st.latency
  assert.ok(l.count > 0 && l.count <= d.delivered)
  assert.ok(l.p50 > 0, 'p50 > 0')
  assert.ok(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, JSON.stringify(l))
  assert.ok(l.max < 10_000, 'latency under 10 s')
  assert.ok(st.generator.cpuSeconds > 0)
  // The machine's share: other processes and the hypervisor's steal (Linux has /proc/stat), never negative.
  assert.ok(st.machine !== null, 'machine figures from /proc/stat')
  assert.ok(st.machine.busyCores >= 0 && st.machine.otherCores >= 0 && st.machine.stealCores >= 0, JSON.stringify(st.machine))
  assert.ok(formatSummary(s).includes('latency ms'))
  assert.match(formatSummary(s), /withheld by the hypervisor \(steal\)/)
}

test('the load tester refuses non-loopback targets unless --allow-host names them', () => {
  assert.throws(() => resolveOptions({ targets: ['http://example.com:3000'], protocol: 'bare' }), UsageError)
  assert.throws(() => resolveOptions({ targets: ['http://10.0.0.1:3000'], protocol: 'bare' }), UsageError)
  assert.equal(resolveOptions({ targets: ['http://example.com:3000'], protocol: 'bare', allowHosts: ['example.com'] }).targets[0], 'http://example.com:3000')
  const o = resolveOptions({ targets: ['ws://localhost:3000', 'http://127.0.0.5:4000', 'http://[::1]:5000'], protocol: 'bare' })
  assert.deepEqual(o.targets, ['http://127.0.0.1:3000', 'http://127.0.0.5:4000', 'http://[::1]:5000'])
  assert.throws(() => resolveOptions({ targets: ['http://127.0.0.1:1'], protocol: 'herald' }), /tokens/)
})

test('load test against an in-process Herald (WebSocket, SSE and long-poll): nothing lost, sane summary', async (t) => {
  const herald = await startHerald(t)
  const options = resolveOptions({
    targets: [herald.url], protocol: 'herald', secret: SECRET,
    connections: 50, rooms: 5, subsPerConn: 2, mix: { ws: 60, sse: 30, poll: 10 },
    rate: 50, duration: 2, warmup: 0.5, workers: 0, progress: 'off', drainTimeout: 5, pollTimeout: 2
  })
  const summary = await runLoadtest(options)
  assertSane(JSON.stringify(summary), 50)
  assert.equal(summary.stages[0].deliveries.targetPerSec, 50 * 100 / 5) // 50 events/s × 20 subscriptions per room
})

test('load test against the bare-ws peer through a worker process, publishing over WebSocket', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const peer = await startBareWs({ port: 0, redisUrl: redis.url })
  t.after(async () => { await peer.close() })
  const options = resolveOptions({
    targets: [peer.url], protocol: 'bare', connections: 50, rooms: 5, rate: 50, publishVia: 'ws',
    duration: 2, warmup: 0.5, workers: 1, progress: 'off', drainTimeout: 5
  })
  const summary = await runLoadtest(options)
  assertSane(JSON.stringify(summary), 50)
  assert.equal(summary.generatorProcesses, 2)
})

/**
 * Redis bus figures (issue 11): how long re-establishing 100,000 channel subscriptions takes after the pub/sub
 * connections drop (one Redis: classic SUBSCRIBE; a Redis Cluster of 3 primaries: SSUBSCRIBE per slot at each
 * primary), and what REDIS_WAIT_REPLICAS=1 costs a publish (latency one at a time, throughput 64 at a time),
 * interleaved with 0 in the same run. Everything runs on loopback, on redis-server processes started here.
 *
 *   npm run bench:redis [-- --channels 100000 --rounds 3 --publishes 2000]
 *
 * Writes bench/results/redis-bus.json and prints a Markdown summary (docs/cluster.md quotes it).
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import type { TestContext } from 'node:test'
import { pino } from 'pino'
import { RedisBroker } from '../src/bus/broker-redis.js'
import { startRedisCluster, type RedisCluster } from '../test/support/redis-cluster.js'
import { startRedis } from './lib/procs.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const { values } = parseArgs({
  options: {
    channels: { type: 'string', default: '100000' },
    rounds: { type: 'string', default: '3' },
    publishes: { type: 'string', default: '2000' }
  }
})
const CHANNELS = Number(values.channels)
const ROUNDS = Number(values.rounds)
const PUBLISHES = Number(values.publishes)
const silent = pino({ level: 'silent' })
const options = { history: { size: 100, ttlSeconds: 3600, metaTtlSeconds: 3600 }, idempotencyTtlSeconds: 60 }

const cleanups: Array<() => unknown> = []
const fakeT = { after: (fn: () => unknown) => cleanups.push(fn) } as unknown as TestContext
async function cleanup (): Promise<void> { for (const fn of cleanups.reverse()) await fn() }
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)) })

function cli (port: number, ...args: string[]): string {
  return spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim()
}
function info (port: number, field: string): number {
  const m = cli(port, 'INFO', 'stats').match(new RegExp(`^${field}:(\\d+)`, 'm'))
  return m === null ? 0 : Number(m[1])
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const pct = (xs: number[], p: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))] }

async function subscribeAll (broker: RedisBroker, names: string[]): Promise<number> {
  const t0 = performance.now()
  for (let i = 0; i < names.length; i += 5000) await Promise.all(names.slice(i, i + 5000).map(async (c) => await broker.subscribe(c)))
  return performance.now() - t0
}

/** Drops every pub/sub connection of the broker (CLIENT KILL on each Redis) and times until all channels are subscribed again and reported. */
async function resubscribe (broker: RedisBroker, ports: number[], field: string, sharded: boolean): Promise<{ ms: number, reported: number }> {
  let reported = 0
  let done: () => void = () => {}
  const all = new Promise<void>((resolve) => { done = resolve })
  broker.setHandler({
    onPublication: () => {},
    onReconnect: (channels) => {
      reported += channels === undefined ? CHANNELS : channels.length
      if (reported >= CHANNELS) done()
    }
  })
  const t0 = performance.now()
  for (const port of ports) cli(port, 'CLIENT', 'KILL', 'TYPE', 'pubsub')
  const deadline = setTimeout(() => done(), 120_000)
  await all
  clearTimeout(deadline)
  const ms = performance.now() - t0
  const subscribed = ports.reduce((n, p) => n + info(p, field), 0)
  if (subscribed !== CHANNELS) throw new Error(`${subscribed} of ${CHANNELS} channels subscribed after the reconnect (${sharded ? 'sharded' : 'classic'})`)
  return { ms, reported }
}

async function resubscribeSingle (): Promise<{ subscribeMs: number, resubscribeMs: number[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-redis-'))
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const redis = await startRedis(dir)
  cleanups.push(async () => { await redis.stop() })
  const broker = new RedisBroker({ ...options, url: redis.url, prefix: 'b', log: silent, commandTimeoutMs: 60_000 })
  await broker.connect()
  const names = Array.from({ length: CHANNELS }, (_, i) => `room:${i}`)
  const subscribeMs = await subscribeAll(broker, names)
  const resubscribeMs = []
  for (let r = 0; r < ROUNDS; r++) resubscribeMs.push((await resubscribe(broker, [redis.port], 'pubsub_channels', false)).ms)
  await broker.close()
  return { subscribeMs, resubscribeMs }
}

async function resubscribeCluster (cluster: RedisCluster): Promise<{ subscribeMs: number, resubscribeMs: number[], perPrimary: number[] }> {
  const broker = new RedisBroker({ ...options, target: { cluster: cluster.seeds.split(',') }, prefix: 'b', log: silent, commandTimeoutMs: 60_000 })
  await broker.connect()
  const names = Array.from({ length: CHANNELS }, (_, i) => `room:${i}`)
  const subscribeMs = await subscribeAll(broker, names)
  const masters = (await cluster.nodes()).filter((n) => n.role === 'master').map((n) => n.port)
  const perPrimary = masters.map((p) => info(p, 'pubsubshard_channels'))
  const resubscribeMs = []
  for (let r = 0; r < ROUNDS; r++) resubscribeMs.push((await resubscribe(broker, masters, 'pubsubshard_channels', true)).ms)
  await broker.close()
  return { subscribeMs, resubscribeMs, perPrimary }
}

async function publishCost (cluster: RedisCluster, replicas: number): Promise<{ p50: number, p99: number, perSecond: number }> {
  const broker = new RedisBroker({ ...options, target: { cluster: cluster.seeds.split(',') }, prefix: `w${replicas}`, log: silent, commandTimeoutMs: 10_000, wait: { replicas, timeoutMs: 1000 } })
  await broker.connect()
  for (let i = 0; i < 200; i++) await broker.publish({ channel: `warm:${i % 50}`, data: i }) // scripts loaded, connections open
  const latencies: number[] = []
  for (let i = 0; i < PUBLISHES; i++) {
    const t0 = performance.now()
    await broker.publish({ channel: `seq:${i % 100}`, data: { i } })
    latencies.push(performance.now() - t0)
  }
  let next = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (next < PUBLISHES * 4) { const i = next++; await broker.publish({ channel: `par:${i % 500}`, data: { i } }) }
  }))
  const perSecond = (PUBLISHES * 4) / ((performance.now() - t0) / 1000)
  await broker.close()
  return { p50: pct(latencies, 0.5), p99: pct(latencies, 0.99), perSecond }
}

async function main (): Promise<void> {
  const results: Record<string, unknown> = { channels: CHANNELS, rounds: ROUNDS, publishes: PUBLISHES, node: process.version, at: new Date().toISOString() }
  console.error(`resubscribing ${CHANNELS} channels: one Redis …`)
  const single = await resubscribeSingle()
  results.single = single
  console.error('… a Redis Cluster of 3 primaries (1 replica each)')
  const cluster = await startRedisCluster(fakeT, { primaries: 3, replicasPerPrimary: 1 })
  const sharded = await resubscribeCluster(cluster)
  results.cluster = sharded
  console.error('publish cost with REDIS_WAIT_REPLICAS 0 and 1, interleaved')
  const wait: Record<string, Array<{ p50: number, p99: number, perSecond: number }>> = { 0: [], 1: [] }
  for (let r = 0; r < 2; r++) for (const n of [0, 1]) wait[n].push(await publishCost(cluster, n))
  results.wait = wait
  mkdirSync('bench/results', { recursive: true })
  writeFileSync('bench/results/redis-bus.json', JSON.stringify(results, null, 2) + '\n')
  const f = (x: number): string => x.toFixed(x < 10 ? 2 : 0)
  const best = (xs: Array<{ p50: number, p99: number, perSecond: number }>): { p50: number, p99: number, perSecond: number } =>
    ({ p50: median(xs.map((x) => x.p50)), p99: median(xs.map((x) => x.p99)), perSecond: median(xs.map((x) => x.perSecond)) })
  const w0 = best(wait[0])
  const w1 = best(wait[1])
  console.log(`| Resubscribe ${CHANNELS.toLocaleString('en')} channels | subscribe first (ms) | resubscribe after the connections drop, median of ${ROUNDS} (ms) |
|---|---|---|
| one Redis (SUBSCRIBE) | ${f(single.subscribeMs)} | ${f(median(single.resubscribeMs))} (${single.resubscribeMs.map(f).join(', ')}) |
| Redis Cluster, 3 primaries (SSUBSCRIBE per slot; ${sharded.perPrimary.join(' / ')} per primary) | ${f(sharded.subscribeMs)} | ${f(median(sharded.resubscribeMs))} (${sharded.resubscribeMs.map(f).join(', ')}) |

| Publish on the cluster | one at a time p50 (ms) | p99 (ms) | 64 at a time (publishes/s) |
|---|---|---|---|
| REDIS_WAIT_REPLICAS=0 | ${f(w0.p50)} | ${f(w0.p99)} | ${f(w0.perSecond)} |
| REDIS_WAIT_REPLICAS=1 | ${f(w1.p50)} | ${f(w1.p99)} | ${f(w1.perSecond)} |
| ratio | ${(w1.p50 / w0.p50).toFixed(2)}× | ${(w1.p99 / w0.p99).toFixed(2)}× | ${(w1.perSecond / w0.perSecond).toFixed(2)}× |`)
}

main().then(cleanup, async (err) => { console.error(err); await cleanup(); process.exit(1) })

/**
 * The broker and presence contracts against a Redis Cluster (3 primaries, started once for this file from
 * redis-server processes and `redis-cli --cluster create`): the third backend. Every subtest uses a key prefix
 * of its own, so they share the cluster without sharing state. Failovers and slot moves under load are in
 * test/faults/.
 */
import assert from 'node:assert/strict'
import { after, test, type TestContext } from 'node:test'
import { pino } from 'pino'
import { RedisBroker } from '../../src/bus/broker-redis.js'
import { RedisPresence } from '../../src/presence/presence-redis.js'
import { publish, startHerald, token, until, WsClient } from '../helper.js'
import { clusterSkipReason, keySlot, startRedisCluster, type RedisCluster } from '../support/redis-cluster.js'
import { brokerContract, brokerOptions, recorder, uid } from './broker.contract.js'
import { presenceContract } from './presence.contract.js'

const silent = pino({ level: 'silent' })
const skip = clusterSkipReason()

let shared: Promise<RedisCluster> | undefined
const cleanups: Array<() => unknown> = []
// Registered at the top level, so it runs after the file's last test (an `after` called inside a test would
// belong to that test).
after(async () => { for (const fn of cleanups) await fn() })
/** The file's cluster, started by the first test that needs it and stopped after the last. */
async function cluster (): Promise<RedisCluster> {
  shared ??= startRedisCluster({ after: (fn: () => unknown) => cleanups.push(fn) } as unknown as TestContext, { primaries: 3, replicasPerPrimary: 0 })
  return await shared
}

async function clusterBroker (t: TestContext, options = brokerOptions(), prefix = `cb${uid()}`): Promise<RedisBroker> {
  const c = await cluster()
  const broker = new RedisBroker({ ...options, target: { cluster: c.seeds.split(',') }, prefix, log: silent, commandTimeoutMs: 3000 })
  await broker.connect()
  t.after(async () => { await broker.close() })
  await until(() => broker.ready(), 'cluster broker ready', 10_000)
  return broker
}

brokerContract('RedisBroker on a Redis Cluster', async (t, options) => await clusterBroker(t, options), { skip })

presenceContract('RedisPresence on a Redis Cluster', async (t) => {
  const c = await cluster()
  const store = new RedisPresence({ target: { cluster: c.seeds.split(',') }, prefix: `cp${uid()}`, ttlSeconds: 30, log: silent })
  await store.connect()
  t.after(async () => { await store.close() })
  return store
}, { skip })

void test('cluster: channels on every primary; each shard channel is subscribed on its own primary, and only while a node has subscribers', { skip }, async (t) => {
  const c = await cluster()
  const prefix = `cs${uid()}`
  const a = await clusterBroker(t, brokerOptions(), prefix)
  const b = await clusterBroker(t, brokerOptions(), prefix)
  const recA = recorder(a)
  // Enough channels that every primary owns some.
  const channels = Array.from({ length: 24 }, (_, i) => `room:${i}-${uid()}`)
  const masters = (await c.nodes()).filter((n) => n.role === 'master')
  const owner = async (ch: string): Promise<number> => (await c.masterOf(keySlot(`${prefix}:{${ch}}`))).port
  const owners = new Set(await Promise.all(channels.map(owner)))
  assert.equal(owners.size, masters.length, 'the channels spread over every primary')
  for (const ch of channels) await a.subscribe(ch)
  for (const ch of channels) await b.publish({ channel: ch, data: ch })
  await until(() => recA.pubs.length === channels.length, 'node A receives one event per channel', 10_000)
  assert.deepEqual(recA.pubs.map((p) => [p.channel, p.offset]).sort(), channels.map((ch) => [ch, 1]).sort())
  // PUBSUB SHARDCHANNELS on each primary: exactly the channels it owns that node A subscribes to.
  const shardChannels = (port: number): string[] => c.cli(port, 'PUBSUB', 'SHARDCHANNELS', `${prefix}:*`).split('\n').filter(Boolean).sort()
  for (const m of masters) {
    const expected = []
    for (const ch of channels) if (await owner(ch) === m.port) expected.push(`${prefix}:{${ch}}`)
    assert.deepEqual(shardChannels(m.port), expected.sort(), `primary ${m.port}`)
  }
  // Unsubscribing half leaves only the other half subscribed anywhere.
  for (const ch of channels.slice(0, 12)) await a.unsubscribe(ch)
  const left = channels.slice(12).map((ch) => `${prefix}:{${ch}}`).sort()
  await until(() => masters.flatMap((m) => shardChannels(m.port)).sort().join() === left.join(), 'unsubscribed channels leave their primaries', 10_000)
  for (const m of masters) for (const ch of shardChannels(m.port)) assert.ok(left.includes(ch))
})

void test('cluster: two Herald nodes share the REST rate limit and events through the cluster', { skip }, async (t) => {
  const c = await cluster()
  const config = { redisCluster: c.seeds.split(','), redisPrefix: `cn${uid()}`, limits: { restMax: 4, restWindowSeconds: 60, restSyncMs: 0 } }
  const a = await startHerald(t, { config })
  const b = await startHerald(t, { config })
  const ws = await WsClient.connect(b.wsUrl)
  t.after(() => ws.close())
  await ws.subscribe('room:cluster')
  const erin = token({ sub: 'erin' })
  const statuses: number[] = []
  for (const node of [a, b, a, b]) statuses.push((await publish(node.url, 'room:cluster', { n: statuses.length }, { token: erin })).status)
  assert.deepEqual(statuses, [201, 201, 201, 201])
  const over = await publish(a.url, 'room:cluster', { n: 5 }, { token: erin })
  assert.equal(over.status, 429, 'node A counts the requests made to B')
  assert.equal(over.body.code, 'HERALD_ERR_RATE_LIMITED')
  const events = await ws.events('room:cluster', 4)
  assert.deepEqual(events.map((e) => [e.offset, e.data.n]), [[1, 0], [2, 1], [3, 2], [4, 3]], 'events published on both nodes reach a subscriber on B in order')
  const ready = await (await fetch(`${a.url}/readyz`)).json() as { bus?: string }
  assert.equal(JSON.stringify(ready).includes('redis-cluster'), true, 'the node reports its bus as redis-cluster: ' + JSON.stringify(ready))
})

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { test, type TestContext } from 'node:test'
import { pino } from 'pino'
import { MemoryPresence } from '../../src/presence/presence-memory.js'
import { RedisPresence } from '../../src/presence/presence-redis.js'
import { redisSkipReason, startRedis, until, type RedisServer } from '../helper.js'
import { changes, member, presenceContract, uid } from './presence.contract.js'

const silent = pino({ level: 'silent' })

presenceContract('MemoryPresence', async (t) => {
  const store = new MemoryPresence()
  await store.connect()
  t.after(async () => { await store.close() })
  return store
})

const redisSkip = redisSkipReason()

async function redisPresence (t: TestContext, redis: RedisServer, opts: { prefix?: string, ttlSeconds?: number } = {}): Promise<RedisPresence> {
  const store = new RedisPresence({ url: redis.url, prefix: opts.prefix ?? `pc${uid()}`, ttlSeconds: opts.ttlSeconds ?? 30, log: silent })
  await store.connect()
  t.after(async () => { await store.close() })
  return store
}

// Every subtest gets its own private redis-server: no state leaks between them.
presenceContract('RedisPresence', async (t) => await redisPresence(t, await startRedis(t)), { skip: redisSkip })

void test('RedisPresence: two nodes on one Redis see each other\'s members and changes', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const prefix = `pn${uid()}`
  const a = await redisPresence(t, redis, { prefix })
  const b = await redisPresence(t, redis, { prefix })
  const seenOnB = changes(b)
  const ch = `room-${uid()}`
  await b.watch(ch)
  await a.join(ch, member('alice', 'a-1'), 0)
  await b.join(ch, member('bob', 'b-1'), 0)
  assert.deepEqual(await a.count(ch), { members: 2, connections: 2 })
  await until(() => seenOnB.some((c) => c.type === 'join' && c.sub === 'alice'), 'B is told of the join made on A')
})

void test('RedisPresence: a dead node\'s entries expire after the TTL, and their leave is announced', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const prefix = `px${uid()}`
  const dead = await redisPresence(t, redis, { prefix, ttlSeconds: 1 })
  const alive = await redisPresence(t, redis, { prefix, ttlSeconds: 1 })
  const seen = changes(alive)
  const ch = `room-${uid()}`
  await alive.watch(ch)
  await dead.join(ch, member('ghost', 'd-1'), 0)
  // The dead node never refreshes; the first touch of the channel after the TTL removes it and announces the leave.
  await until(async () => (await alive.count(ch)).members === 0, 'the ghost is gone after its TTL', 8000)
  await until(() => seen.some((c) => c.type === 'leave' && c.sub === 'ghost'), 'its leave is announced')
})

void test('RedisPresence: entries lost with Redis (restarted empty) come back with the next refresh, as joins', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const store = await redisPresence(t, redis)
  const seen = changes(store)
  const ch = `room-${uid()}`
  await store.watch(ch)
  const alice = member('alice', 'c1', { name: 'Alice' })
  await store.join(ch, alice, 0)
  spawnSync('redis-cli', ['-p', String(redis.port), 'FLUSHALL'])
  assert.deepEqual(await store.count(ch), { members: 0, connections: 0 }, 'gone with the data')
  await store.refresh(ch, [alice])
  assert.deepEqual(await store.list(ch), [alice], 'refresh put the live connection back')
  await until(() => seen.filter((c) => c.type === 'join' && c.sub === 'alice').length === 2, 'its return is announced as a join')
})

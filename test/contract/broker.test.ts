import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { test, type TestContext } from 'node:test'
import { pino } from 'pino'
import { EMPTY_EPOCH, type BrokerOptions } from '../../src/bus/broker.js'
import { MemoryBroker } from '../../src/bus/broker-memory.js'
import { RedisBroker } from '../../src/bus/broker-redis.js'
import { redisSkipReason, startRedis, until, type RedisServer } from '../helper.js'
import { brokerContract, brokerOptions, recorder, uid } from './broker.contract.js'

const silent = pino({ level: 'silent' })

// ---------------------------------------------------------------- the two implementations

brokerContract('MemoryBroker', async (t, options) => {
  const broker = new MemoryBroker(options)
  await broker.connect()
  t.after(async () => { await broker.close() })
  return broker
})

const redisSkip = redisSkipReason()

async function redisBroker (t: TestContext, redis: RedisServer, options: BrokerOptions, prefix = `hc${uid()}`): Promise<RedisBroker> {
  const broker = new RedisBroker({ ...options, url: redis.url, prefix, log: silent, commandTimeoutMs: 2000 })
  await broker.connect()
  t.after(async () => { await broker.close() })
  await until(() => broker.ready(), 'redis broker ready', 3000)
  return broker
}

// Every subtest gets its own private redis-server (and a unique key prefix): no state leaks between them.
brokerContract('RedisBroker', async (t, options) => await redisBroker(t, await startRedis(t), options), { skip: redisSkip })

void test('RedisBroker: every key and the pub/sub channel of a channel share its {channel} hash tag', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const prefix = `tag${uid()}`
  const broker = await redisBroker(t, redis, brokerOptions(), prefix)
  const chA = 'room:1'
  const chB = 'user@example.com'
  await broker.subscribe(chA)
  await broker.publish({ channel: chA, data: 1, idempotencyKey: 'key-a' })
  await broker.publish({ channel: chA, data: 2 })
  await broker.publish({ channel: chB, data: 1, idempotencyKey: 'key-b' })
  const never = `never-${uid()}`
  await broker.history(never, { since: 0, limit: 0 }) // reading creates no key
  const keys = redisCli(redis, '--scan', '--pattern', `${prefix}:*`).split('\n').filter(Boolean).sort()
  assert.ok(keys.length >= 6, 'meta, stream and idempotency keys exist: ' + keys.join(' '))
  for (const key of keys) assert.ok(hashTag(key) !== undefined, `key ${key} has a hash tag`)
  assert.deepEqual(keys.filter((k) => hashTag(k) === chA), [`${prefix}:{${chA}}:i:key-a`, `${prefix}:{${chA}}:m`, `${prefix}:{${chA}}:s`])
  assert.deepEqual(keys.filter((k) => hashTag(k) === chB), [`${prefix}:{${chB}}:i:key-b`, `${prefix}:{${chB}}:m`, `${prefix}:{${chB}}:s`])
  assert.deepEqual(keys.filter((k) => hashTag(k) === never), [])
  assert.equal(keys.filter((k) => ![chA, chB, never].includes(hashTag(k) ?? '')).length, 0, 'no key outside a channel hash tag')
  const pubsub = redisCli(redis, 'PUBSUB', 'CHANNELS', `${prefix}:*`).split('\n').filter(Boolean)
  assert.deepEqual(pubsub, [`${prefix}:{${chA}}`])
  assert.equal(hashTag(pubsub[0]), chA)
})

void test('RedisBroker: two brokers on one Redis (two nodes) share offsets, epoch, idempotency and live delivery', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const prefix = `nodes${uid()}`
  const nodeA = await redisBroker(t, redis, brokerOptions(), prefix)
  const nodeB = await redisBroker(t, redis, brokerOptions(), prefix)
  const recB = recorder(nodeB)
  const ch = `shared-${uid()}`
  await nodeB.subscribe(ch)
  const r1 = await nodeA.publish({ channel: ch, data: 'a1' })
  const r2 = await nodeB.publish({ channel: ch, data: 'b2' })
  const r3 = await nodeA.publish({ channel: ch, data: 'a3', idempotencyKey: 'x' })
  const dup = await nodeB.publish({ channel: ch, data: 'a3', idempotencyKey: 'x' })
  assert.deepEqual([r1.offset, r2.offset, r3.offset], [1, 2, 3])
  assert.equal(new Set([r1.epoch, r2.epoch, r3.epoch]).size, 1)
  assert.deepEqual(dup, { ...r3, duplicate: true }, 'idempotency keys are shared between nodes')
  await until(() => recB.pubs.length >= 3, 'node B receives all three', 3000)
  assert.deepEqual(recB.pubs.map((p) => [p.offset, JSON.parse(p.frame).data]), [[1, 'a1'], [2, 'b2'], [3, 'a3']])
  const other = await redisBroker(t, redis, brokerOptions(), `other${uid()}`)
  const isolated = await other.publish({ channel: ch, data: 'z' })
  assert.equal(isolated.offset, 1, 'another prefix is another namespace')
})

void test('RedisBroker: the epoch changes when Redis loses its data (FLUSHALL)', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const broker = await redisBroker(t, redis, brokerOptions())
  const ch = `flush-${uid()}`
  await broker.publish({ channel: ch, data: 1 })
  const before = await broker.publish({ channel: ch, data: 2 })
  assert.equal(before.offset, 2)
  assert.equal(redisCli(redis, 'FLUSHALL').trim(), 'OK')
  const h = await broker.history(ch, { since: 0, limit: 10 })
  assert.notEqual(h.top.epoch, before.epoch, 'another epoch, so nobody resumes into offsets that mean something else now')
  assert.deepEqual(h, { publications: [], top: { offset: 0, epoch: EMPTY_EPOCH }, earliest: 1 })
  const after = await broker.publish({ channel: ch, data: 3 })
  assert.equal(after.offset, 1)
  assert.notEqual(after.epoch, before.epoch)
  // A publish (rather than a read) after the loss starts a new epoch too.
  const ch2 = `flush2-${uid()}`
  const p = await broker.publish({ channel: ch2, data: 1 })
  assert.equal(redisCli(redis, 'FLUSHALL').trim(), 'OK')
  const q = await broker.publish({ channel: ch2, data: 2 })
  assert.equal(q.offset, 1)
  assert.notEqual(q.epoch, p.epoch)
})

void test('RedisBroker: an idempotency key outliving its epoch (meta TTL shorter than IDEMPOTENCY_TTL) is not a duplicate in the next one', { skip: redisSkip }, async (t) => {
  const redis = await startRedis(t)
  const prefix = `ie${uid()}`
  const broker = await redisBroker(t, redis, brokerOptions({ metaTtlSeconds: 1, idempotencyTtlSeconds: 60 }), prefix)
  const ch = `idem-${uid()}`
  const first = await broker.publish({ channel: ch, data: 'pay', idempotencyKey: 'k1' })
  await until(() => redisCli(redis, 'EXISTS', `${prefix}:{${ch}}:m`).trim() === '0', 'the channel state expired', 5000)
  assert.equal(redisCli(redis, 'EXISTS', `${prefix}:{${ch}}:i:k1`).trim(), '1', 'the key is still there')
  const again = await broker.publish({ channel: ch, data: 'pay', idempotencyKey: 'k1' })
  assert.equal(again.duplicate, false, 'not answered with an offset of the dead epoch')
  assert.equal(again.offset, 1)
  assert.notEqual(again.epoch, first.epoch)
  const retry = await broker.publish({ channel: ch, data: 'pay', idempotencyKey: 'k1' })
  assert.deepEqual(retry, { ...again, duplicate: true }, 'within the new epoch the key works again')
})

function redisCli (redis: RedisServer, ...args: string[]): string {
  const res = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), ...args], { encoding: 'utf8', timeout: 5000 })
  if (res.status !== 0) throw new Error(`redis-cli ${args.join(' ')} failed: ${res.stderr}`)
  return res.stdout
}

/** The hash tag Redis Cluster would hash for `key`: between the first `{` and the next `}`, if non-empty. */
function hashTag (key: string): string | undefined {
  const open = key.indexOf('{')
  if (open === -1) return undefined
  const close = key.indexOf('}', open + 1)
  if (close === -1 || close === open + 1) return undefined
  return key.slice(open + 1, close)
}

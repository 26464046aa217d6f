/**
 * An epoch can go on from one that went on from another: a slot moved away and back (each move puts the keys on
 * another Redis), a failover after a move, a Redis restarted twice from older snapshots. A reader in any epoch of
 * the line, at or before where that epoch ended, resumes without loss; history names each event by the epoch it was
 * published in; an idempotency key of any such event still answers. test/faults/slot-migration.test.ts shows it on
 * a cluster; here one Redis is restarted from its snapshots, and the epoch is restarted by hand.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { pino } from 'pino'
import { RedisBroker } from '../src/bus/broker-redis.js'
import { recoveryFailure } from '../src/hub/recovery.js'
import { brokerOptions } from './contract/broker.contract.js'
import { brokerAnswers, redisSkipReason, startRedis, until, redisCli } from './helper.js'


const skip = redisSkipReason()
const cli = redisCli

void test('three epochs in line: readers of the first two resume, history names every event by its epoch, idempotency keys hold', { skip }, async (t) => {
  const redis = await startRedis(t)
  const broker = new RedisBroker({ ...brokerOptions({ historySize: 100 }), url: redis.url, prefix: 'bl', log: pino({ level: 'silent' }), commandTimeoutMs: 2000 })
  t.after(async () => { await broker.close() })
  await broker.connect()
  const restartFromSnapshot = async (): Promise<void> => {
    await redis.stop('SIGKILL')
    await redis.restart()
    await until(async () => await brokerAnswers(broker), 'broker reconnected', 10_000)
  }

  // Epoch A: 1..3 survive, 4 is lost with the restart.
  for (let i = 1; i <= 3; i++) await broker.publish({ channel: 'c', data: i, idempotencyKey: `k${i}` })
  assert.equal(cli(redis, 'SAVE'), 'OK')
  const a = (await broker.publish({ channel: 'c', data: 'lost' })).epoch
  await restartFromSnapshot()
  // Epoch B goes on from A:3; its 4 survives, its 5 is lost.
  const b4 = await broker.publish({ channel: 'c', data: 4 })
  assert.notEqual(b4.epoch, a)
  assert.equal(cli(redis, 'SAVE'), 'OK')
  await broker.publish({ channel: 'c', data: 'lost too' })
  await restartFromSnapshot()
  // Epoch C goes on from B:4.
  const c5 = await broker.publish({ channel: 'c', data: 5 })
  assert.deepEqual([c5.offset, c5.epoch === a || c5.epoch === b4.epoch], [5, false])

  const h = await broker.history('c', { since: 0, limit: 10 })
  assert.deepEqual(h.publications.map((p) => [p.offset, p.epoch, JSON.parse(p.frame).data]), [[1, a, 1], [2, a, 2], [3, a, 3], [4, b4.epoch, 4], [5, c5.epoch, 5]])
  assert.deepEqual([h.previous, h.earlier], [{ offset: 4, epoch: b4.epoch }, [{ offset: 3, epoch: a }]])
  const from = async (offset: number, epoch: string): Promise<string | undefined> => recoveryFailure({ offset, epoch }, await broker.history('c', { since: offset, limit: 10 }))
  assert.equal(await from(2, a), undefined, 'a reader two epochs back, before what was lost, resumes')
  assert.equal(await from(3, a), undefined)
  assert.equal(await from(4, a), 'epoch_changed', 'a reader that saw A:4 (lost) is told')
  assert.equal(await from(4, b4.epoch), undefined)
  assert.equal(await from(5, b4.epoch), 'epoch_changed', 'a reader that saw B:5 (lost) is told')
  assert.deepEqual(await broker.publish({ channel: 'c', data: 2, idempotencyKey: 'k2' }), { channel: 'c', offset: 2, epoch: a, duplicate: true }, 'a key of A still answers')

  // A node that saw further restarts the epoch: D goes on from C:5, and the line keeps A and B.
  assert.equal(await broker.restartEpoch('c', { offset: 6, epoch: c5.epoch }), true)
  const d = await broker.history('c', { since: 0, limit: 10 })
  assert.deepEqual([d.top.offset, d.previous, d.earlier], [5, { offset: 5, epoch: c5.epoch }, [{ offset: 4, epoch: b4.epoch }, { offset: 3, epoch: a }]])
  assert.equal(await from(1, a), undefined, 'three epochs back')
})

void test('the line is bounded: past 16 epochs the oldest is forgotten and its readers are told', { skip }, async (t) => {
  const redis = await startRedis(t)
  const broker = new RedisBroker({ ...brokerOptions({ historySize: 100 }), url: redis.url, prefix: 'bl', log: pino({ level: 'silent' }), commandTimeoutMs: 2000 })
  t.after(async () => { await broker.close() })
  await broker.connect()
  const first = await broker.publish({ channel: 'c', data: 1 })
  const epochs = [first.epoch]
  for (let i = 0; i < 17; i++) {
    const top = (await broker.history('c', { since: 0, limit: 0 })).top
    assert.equal(await broker.restartEpoch('c', { offset: top.offset + 1, epoch: top.epoch }), true)
    epochs.push((await broker.history('c', { since: 0, limit: 0 })).top.epoch)
  }
  const h = await broker.history('c', { since: 0, limit: 10 })
  assert.equal(h.earlier?.length, 15)
  assert.deepEqual([h.previous, ...h.earlier!].map((p) => p!.epoch), epochs.slice(1, 17).reverse(), 'the 16 epochs before the current one, not the oldest')
  assert.equal(recoveryFailure({ offset: 1, epoch: epochs[1] }, h), undefined)
  assert.equal(recoveryFailure({ offset: 1, epoch: epochs[0] }, h), 'epoch_changed', 'the forgotten one')
  assert.deepEqual(h.publications.map((p) => [p.offset, p.epoch]), [[1, epochs[1]]], 'its event is named by the oldest epoch kept (the same event)')
})

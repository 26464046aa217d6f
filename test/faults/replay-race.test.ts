import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { pino } from 'pino'
import { MemoryBroker } from '../../src/bus/broker-memory.js'
import { RedisBroker } from '../../src/bus/broker-redis.js'
import type { Broker, BrokerHandler, HistoryRequest, HistoryResult, PublishRequest, PublishResult } from '../../src/bus/broker.js'
import { defaultConfig } from '../../src/config.js'
import { publish, startHerald, until, WsClient, type Frame } from '../helper.js'
import { clusterSkipReason, startRedisCluster } from '../support/redis-cluster.js'

/*
 * A resume (subscribe with `since`) reads history, holding the live events that arrive meanwhile, and then hands
 * over to live delivery. The scenario tests found a silent gap there, when the channel's stream changes epoch
 * between the history read and the hand-over: the stream's first event (the channel was at the empty position),
 * or the first event of an epoch that goes on in line (after a failover, a restart or a slot move). These tests
 * hold the history read's answer until such an event has been dispatched on the node — the order in which a
 * history reply and a pub/sub message can reach a node anyway, as they travel on different connections.
 */

/** A bus whose next history read of one channel (one that asks for events) answers only when the test says so. */
class GatedBroker implements Broker {
  readonly kind: string
  private gate?: { channel: string, reached: () => void, released: Promise<void> }

  constructor (private readonly inner: Broker) {
    this.kind = inner.kind
    if (inner.restartEpoch !== undefined) this.restartEpoch = inner.restartEpoch.bind(inner)
  }

  /** The next read of `channel` with limit > 0 is made, then its answer waits for `release`. */
  holdNextRead (channel: string): { reached: Promise<void>, release: () => void } {
    let release!: () => void
    let reached!: () => void
    const released = new Promise<void>((resolve) => { release = resolve })
    const reachedP = new Promise<void>((resolve) => { reached = resolve })
    this.gate = { channel, reached, released }
    return { reached: reachedP, release }
  }

  restartEpoch?: (channel: string, seen: { offset: number, epoch: string }) => Promise<boolean>
  setHandler (handler: BrokerHandler): void { this.inner.setHandler(handler) }
  async connect (): Promise<void> { await this.inner.connect() }
  async publish (req: PublishRequest): Promise<PublishResult> { return await this.inner.publish(req) }
  async subscribe (channel: string): Promise<void> { await this.inner.subscribe(channel) }
  async unsubscribe (channel: string): Promise<void> { await this.inner.unsubscribe(channel) }
  ready (): boolean { return this.inner.ready() }
  async close (): Promise<void> { await this.inner.close() }

  async history (channel: string, req: HistoryRequest): Promise<HistoryResult> {
    const result = await this.inner.history(channel, req)
    const gate = this.gate
    if (gate !== undefined && gate.channel === channel && req.limit > 0) {
      this.gate = undefined
      gate.reached()
      await gate.released
    }
    return result
  }
}

const events = (ws: WsClient, channel: string): Frame[] => ws.frames.filter((f) => f.type === 'event' && f.channel === channel)

/** A resumer subscribes from `since` with its history read held; `during` runs meanwhile; then one more event. */
async function resumeAcross (t: TestContext, gated: GatedBroker, base: { url: string, wsUrl: string }, channel: string, since: { offset: number, epoch: string }, during: () => Promise<void>): Promise<Frame[]> {
  const live = await WsClient.connect(base.wsUrl)
  t.after(() => live.close())
  await live.subscribe(channel)
  const resumer = await WsClient.connect(base.wsUrl)
  t.after(() => resumer.close())
  const gate = gated.holdNextRead(channel)
  resumer.send({ type: 'subscribe', channel, since, id: 'resume' })
  await gate.reached
  const before = events(live, channel).length
  await during()
  // Dispatched on this node (the live subscriber has it), so held for the resumer too: now the read answers.
  await until(() => events(live, channel).length > before, 'the live subscriber gets the event published meanwhile', 30_000)
  gate.release()
  const subscribed = await resumer.waitFor((f) => f.type === 'subscribed', 10_000)
  assert.equal(subscribed.recovered, true, JSON.stringify(subscribed))
  const last = await publish(base.url, channel, { n: 'after' })
  assert.equal(last.status, 201)
  await live.waitFor((f) => f.type === 'event' && f.offset === last.body.offset, 10_000)
  await until(() => events(resumer, channel).some((e) => e.offset === last.body.offset), 'the resumer gets the last event', 10_000)
  return events(resumer, channel)
}

test('a resume from the empty position while the channel\'s first event is published: no silent gap', async (t) => {
  const config = defaultConfig()
  const gated = new GatedBroker(new MemoryBroker({ history: config.history, idempotencyTtlSeconds: config.idempotencyTtlSeconds }))
  await gated.connect()
  const node = await startHerald(t, { options: { broker: gated } })
  t.after(async () => { await gated.close() })
  const ch = 'race:first'
  const got = await resumeAcross(t, gated, node, ch, { offset: 0, epoch: '0' }, async () => {
    // The channel's first event, published while the resumer's history read (which found no stream) is on its way back.
    assert.equal((await publish(node.url, ch, { n: 1 })).status, 201)
  })
  assert.deepEqual(got.map((e) => e.offset), [1, 2], 'the first event, then the next: nothing skipped')
})

test('a resume while the channel\'s slot moves (its epoch goes on in line): no silent gap', { skip: clusterSkipReason(), timeout: 120_000 }, async (t) => {
  const cluster = await startRedisCluster(t, { primaries: 3, replicasPerPrimary: 0 })
  const config = defaultConfig()
  const inner = new RedisBroker({ history: config.history, idempotencyTtlSeconds: config.idempotencyTtlSeconds, target: { cluster: cluster.seeds.split(',') }, prefix: 'hr', log: pino({ level: 'silent' }) })
  const gated = new GatedBroker(inner)
  await gated.connect()
  const node = await startHerald(t, { options: { broker: gated } })
  t.after(async () => { await gated.close() })
  const ch = 'race:move'
  let position = { offset: 0, epoch: '' }
  for (let i = 1; i <= 3; i++) {
    const res = await publish(node.url, ch, { n: i })
    assert.equal(res.status, 201)
    position = { offset: res.body.offset, epoch: res.body.epoch }
  }
  const got = await resumeAcross(t, gated, node, ch, position, async () => {
    await cluster.moveSlot(cluster.slotOf(`hr:{${ch}}`))
    const res = await publish(node.url, ch, { n: 4 })
    assert.equal(res.status, 201)
    assert.notEqual(res.body.epoch, position.epoch, 'the keys are on another Redis: the epoch goes on in line')
  })
  t.diagnostic(`the resumer got ${got.map((e) => `${e.epoch as string}:${e.offset as number}`).join(' ')}`)
  assert.deepEqual(got.map((e) => e.offset), [4, 5], 'the event of the new epoch, then the next: nothing skipped')
})

import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { RedisBroker } from '../src/bus/broker-redis.js'
import { publish, redisSkipReason, startHerald, startRedis, until, WsClient } from './helper.js'

// Pub/sub is at most once, and a subscription can die without a sound. The position check finds a channel that
// fell behind the bus and catches it up from history: a silent loss costs a delay, never an event.

test('a subscription lost without a sound: the position check finds the channel behind, subscribes again and delivers everything, in order', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const { app, url, wsUrl } = await startHerald(t, { redisUrl: redis.url, config: { positionCheckSeconds: 3600 } })
  const ws = await WsClient.connect(wsUrl)
  await ws.subscribe('quiet:room')
  assert.equal((await publish(url, 'quiet:room', { n: 1 })).status, 201)
  await ws.events('quiet:room', 1)

  // The fault: the node's Redis subscription to the channel is gone, and nothing tells the hub.
  const broker = app.herald.broker as RedisBroker
  await (broker as unknown as { pubsub: { sub: { unsubscribe: (n: string) => Promise<unknown> } } }).pubsub.sub.unsubscribe('herald-test:{quiet:room}')
  for (let n = 2; n <= 4; n++) assert.equal((await publish(url, 'quiet:room', { n })).status, 201)
  // Nothing arrives live (a barrier on another channel proves the node is delivering otherwise).
  await ws.subscribe('other:room')
  assert.equal((await publish(url, 'other:room', { barrier: true })).status, 201)
  await ws.events('other:room', 1)
  assert.equal(ws.frames.filter((f) => f.type === 'event' && f.channel === 'quiet:room').length, 1, 'the lost subscription delivered nothing')

  // The check, run now (rather than on its timer, for channels idle that long).
  await app.herald.hub.checkPositions(0)
  const events = await ws.events('quiet:room', 4)
  assert.deepEqual(events.map((e) => e.data.n), [1, 2, 3, 4])
  const caughtUp = (await app.herald.metrics.catchUps.get()).values.find((v) => v.labels.reason === 'position')
  assert.equal(caughtUp?.value, 1)
  // And the subscription is back: the next event arrives live.
  assert.equal((await publish(url, 'quiet:room', { n: 5 })).status, 201)
  await until(() => ws.frames.filter((f) => f.type === 'event' && f.channel === 'quiet:room').length === 5, 'live again')
})

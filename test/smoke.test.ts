import assert from 'node:assert/strict'
import { eachBus, startHerald, publish, WsClient, SseClient, poll } from './helper.js'

eachBus('one publish reaches a WebSocket, an SSE stream and a long-poll, in order', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl })
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  const sub = await ws.subscribe('room:1')
  assert.equal(sub.offset, 0)
  const sse = await SseClient.open(url, ['room:1'])
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')
  const first = await poll(url, ['room:1'], { timeout: 0 })
  assert.equal(first.status, 200)
  const waiting = poll(url, ['room:1'], { cursor: first.body.cursor, timeout: 5 })
  for (let i = 1; i <= 3; i++) {
    const res = await publish(url, 'room:1', { n: i })
    assert.equal(res.status, 201)
    assert.equal(res.body.offset, i)
  }
  const wsEvents = await ws.events('room:1', 3)
  assert.deepEqual(wsEvents.map((e) => [e.offset, e.data.n]), [[1, 1], [2, 2], [3, 3]])
  const sseEvents = await sse.waitEvents('room:1', 3)
  assert.deepEqual(sseEvents.map((e) => e.offset), [1, 2, 3])
  const polled = await waiting
  assert.equal(polled.status, 200)
  assert.ok(polled.body.events.length >= 1)
  assert.equal(polled.body.events[0].offset, 1)
})


eachBus('pre-built WebSocket frames carry every payload length class (7-bit, 16-bit, 64-bit)', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: { maxBodyBytes: 1024 * 1024 } })
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  await ws.subscribe('sizes')
  const sizes = [1, 100, 1000, 70_000, 200_000]
  for (const n of sizes) assert.equal((await publish(url, 'sizes', 'x'.repeat(n))).status, 201)
  const events = await ws.events('sizes', sizes.length)
  assert.deepEqual(events.map((e) => (e.data as string).length), sizes)
})

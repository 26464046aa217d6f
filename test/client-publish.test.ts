import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import { eachBus, publish, SseClient, startHerald, token, WsClient, type Frame, type TestApp } from './helper.js'
import type { DeepPartial, HeraldConfig } from '../src/config.js'
import type { NamespacesFile } from '../src/namespaces.js'

// Publishing over the WebSocket: acked once stored, delivered everywhere, idempotent by `id`, and refused where the
// namespace or the token does not allow it.

const NAMESPACES: NamespacesFile = {
  namespaces: {
    room: {},
    ro: { clientPublish: false }
  }
}

function config (namespaces: NamespacesFile = NAMESPACES): DeepPartial<HeraldConfig> {
  return { namespaces, presence: { ttlSeconds: 3, batchMs: 50 } }
}

async function client (t: TestContext, wsUrl: string, claims: Record<string, unknown> = {}): Promise<WsClient> {
  const c = await WsClient.connect(wsUrl, { token: token(claims) })
  t.after(() => { if (c.closed === null) c.socket.terminate() })
  await c.waitFor((f) => f.type === 'connected')
  return c
}

/** Sends a frame with `id` and returns the one ack or error answering it. */
async function request (c: WsClient, frame: Record<string, unknown> & { id: string }): Promise<Frame> {
  const from = c.frames.length
  c.send(frame)
  return await c.waitFor((f) => f.id === frame.id && (f.type === 'ack' || f.type === 'error'), 5000, from)
}

async function history (base: string, channel: string): Promise<{ status: number, body: any }> {
  const res = await fetch(`${base}/v1/channels/${encodeURIComponent(channel)}/events?since=0&limit=100`, { headers: { authorization: `Bearer ${token()}` } })
  return { status: res.status, body: await res.json() }
}

/** Node A, and with Redis a second node B on the same bus (with the in-process bus, B is A). */
async function nodes (t: TestContext, redisUrl: string | undefined, cfg = config()): Promise<[TestApp, TestApp]> {
  const a = await startHerald(t, { redisUrl, config: cfg })
  const b = redisUrl === undefined ? a : await startHerald(t, { redisUrl, config: cfg })
  return [a, b]
}

const events = (c: WsClient, channel: string): Frame[] => c.frames.filter((f) => f.type === 'event' && f.channel === channel)

eachBus('a WebSocket publish is acked with its stored offset and reaches subscribers on this node and the other', async (t, bus) => {
  const [a, b] = await nodes(t, bus.redisUrl)
  const ch = 'room:ws-pub'
  const here = await client(t, a.wsUrl)
  await here.subscribe(ch)
  const there = await client(t, b.wsUrl)
  await there.subscribe(ch)
  const first = await publish(a.url, ch, { n: 0 }) // offset 1, from REST
  await here.events(ch, 1)
  await there.events(ch, 1)

  const pub = await client(t, a.wsUrl, { sub: 'writer', subscribe: [], publish: ['room:*'] })
  const ack = await request(pub, { type: 'publish', channel: ch, data: { n: 1, text: 'hi' }, event: 'msg', id: 'm-1' })
  assert.deepEqual(ack, { type: 'ack', id: 'm-1', channel: ch, offset: 2, epoch: first.body.epoch, duplicate: false })

  for (const [name, c] of [['same node', here], ['other node', there]] as const) {
    const got = await c.events(ch, 2)
    assert.equal(got.length, 2, name)
    const e = got[1]
    assert.equal(e.offset, 2, name)
    assert.equal(e.epoch, ack.epoch, name)
    assert.equal(e.event, 'msg', name)
    assert.deepEqual(e.data, { n: 1, text: 'hi' }, name)
    assert.ok(Number.isInteger(e.ts))
  }
  const h = await history(b.url, ch)
  assert.equal(h.status, 200)
  assert.deepEqual(h.body.events.map((e: Frame) => [e.offset, e.event, e.data]), [[1, undefined, { n: 0 }], [2, 'msg', { n: 1, text: 'hi' }]])
  assert.equal(pub.frames.filter((f) => f.type === 'event').length, 0, 'the publisher is not subscribed, so gets no event')
})

eachBus('a retried WebSocket publish (same id) is stored once: duplicate:true with the first offset, delivered once', async (t, bus) => {
  const [a, b] = await nodes(t, bus.redisUrl)
  const ch = 'room:retry'
  const reader = await client(t, b.wsUrl)
  await reader.subscribe(ch)
  const pub = await client(t, a.wsUrl)
  const frame = { type: 'publish', channel: ch, data: { order: 42, items: ['a', 'b'] }, event: 'order', id: 'order-42' }
  const first = await request(pub, frame)
  assert.equal(first.type, 'ack', JSON.stringify(first))
  assert.equal(first.duplicate, false)
  assert.equal(first.offset, 1)

  const again = await request(pub, frame)
  assert.deepEqual(again, { ...first, duplicate: true })
  // A retry from another connection (reconnected client), on the other node, is the same publish.
  const pub2 = await client(t, b.wsUrl)
  const third = await request(pub2, frame)
  assert.deepEqual(third, { ...first, duplicate: true })
  // … and the REST publish with the same key and content too.
  const rest = await publish(b.url, ch, frame.data, { id: frame.id, event: frame.event })
  assert.equal(rest.status, 201)
  assert.deepEqual(rest.body, { channel: ch, offset: first.offset, epoch: first.epoch, duplicate: true })

  // A sentinel publish: once it arrives, anything a retry might have caused has arrived too.
  const next = await request(pub, { type: 'publish', channel: ch, data: { order: 43 }, id: 'order-43' })
  assert.equal(next.offset, 2)
  const got = await reader.events(ch, 2)
  assert.deepEqual(got.map((e) => [e.offset, e.data.order]), [[1, 42], [2, 43]])
  const h = await history(a.url, ch)
  assert.deepEqual(h.body.events.map((e: Frame) => e.offset), [1, 2])
  assert.equal(h.body.offset, 2)
})

eachBus('reusing a publish id with different data is refused with IDEMPOTENCY_CONFLICT, carrying the id', async (t, bus) => {
  const [a, b] = await nodes(t, bus.redisUrl)
  const ch = 'room:conflict'
  const reader = await client(t, a.wsUrl)
  await reader.subscribe(ch)
  const pub = await client(t, b.wsUrl)
  const first = await request(pub, { type: 'publish', channel: ch, data: { v: 1 }, id: 'k-1' })
  assert.equal(first.type, 'ack')
  const conflict = await request(pub, { type: 'publish', channel: ch, data: { v: 2 }, id: 'k-1' })
  assert.equal(conflict.type, 'error')
  assert.equal(conflict.code, 'HERALD_ERR_IDEMPOTENCY_CONFLICT')
  assert.equal(conflict.id, 'k-1')
  assert.equal(conflict.channel, ch)
  const otherEvent = await request(pub, { type: 'publish', channel: ch, data: { v: 1 }, event: 'renamed', id: 'k-1' })
  assert.equal(otherEvent.code, 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 'a different event name is different content too')
  assert.equal(pub.closed, null, 'the connection stays open')

  const sentinel = await request(pub, { type: 'publish', channel: ch, data: { v: 'end' }, id: 'k-2' })
  assert.equal(sentinel.offset, 2)
  assert.deepEqual((await reader.events(ch, 2)).map((e) => [e.offset, e.data.v]), [[1, 1], [2, 'end']])
  assert.deepEqual((await history(b.url, ch)).body.events.map((e: Frame) => e.data.v), [1, 'end'])
})

eachBus('WebSocket publish is refused with PUBLISH_DISABLED where clientPublish is false, and FORBIDDEN outside the token\'s patterns', async (t, bus) => {
  const [a] = await nodes(t, bus.redisUrl)
  const reader = await client(t, a.wsUrl)
  await reader.subscribe('ro:feed')
  await reader.subscribe('room:private')
  const pub = await client(t, a.wsUrl, { sub: 'writer', publish: ['ro:*', 'room:public'] })

  const disabled = await request(pub, { type: 'publish', channel: 'ro:feed', data: { x: 1 }, id: 'ro-1' })
  assert.equal(disabled.type, 'error')
  assert.equal(disabled.code, 'HERALD_ERR_PUBLISH_DISABLED')
  assert.equal(disabled.id, 'ro-1')
  assert.equal(disabled.channel, 'ro:feed')
  // A backend may still publish there over REST.
  const rest = await publish(a.url, 'ro:feed', { x: 'rest' }, { token: token({ sub: 'backend', publish: ['ro:*'] }) })
  assert.equal(rest.status, 201, JSON.stringify(rest.body))
  assert.equal(rest.body.offset, 1, 'the refused WebSocket publish stored nothing')
  assert.deepEqual((await reader.events('ro:feed', 1)).map((e) => e.data), [{ x: 'rest' }])

  const forbidden = await request(pub, { type: 'publish', channel: 'room:private', data: { x: 2 }, id: 'f-1' })
  assert.equal(forbidden.type, 'error')
  assert.equal(forbidden.code, 'HERALD_ERR_FORBIDDEN')
  assert.equal(forbidden.id, 'f-1')
  assert.equal(forbidden.channel, 'room:private')
  // Permission is checked before the namespace: a token without the pattern is FORBIDDEN even where clients may not publish.
  const pubNoRo = await client(t, a.wsUrl, { sub: 'other', publish: ['room:*'] })
  assert.equal((await request(pubNoRo, { type: 'publish', channel: 'ro:feed', data: 1, id: 'f-2' })).code, 'HERALD_ERR_FORBIDDEN')

  const allowed = await request(pub, { type: 'publish', channel: 'room:public', data: { x: 3 }, id: 'ok-1' })
  assert.equal(allowed.type, 'ack', JSON.stringify(allowed))
  const h = await history(a.url, 'room:private')
  assert.deepEqual(h.body.events, [], 'nothing was stored by the forbidden publish')
  assert.equal(h.body.offset, 0)
  assert.deepEqual((await history(a.url, 'ro:feed')).body.events.map((e: Frame) => e.data), [{ x: 'rest' }])
  assert.equal(events(reader, 'room:private').length, 0)
})

eachBus('a WebSocket publish without id is stored and delivered, and gets no ack', async (t, bus) => {
  const [a, b] = await nodes(t, bus.redisUrl)
  const ch = 'room:fire-and-forget'
  const reader = await client(t, b.wsUrl)
  await reader.subscribe(ch)
  const pub = await client(t, a.wsUrl)
  pub.send({ type: 'publish', channel: ch, data: { note: 'no id' } })
  pub.send({ type: 'publish', channel: ch, data: { note: 'no id either' }, event: 'note' })
  const got = await reader.events(ch, 2)
  assert.deepEqual(got.map((e) => [e.offset, e.event, e.data.note]), [[1, undefined, 'no id'], [2, 'note', 'no id either']])
  const h = await history(a.url, ch)
  assert.deepEqual(h.body.events.map((e: Frame) => [e.offset, e.data.note]), [[1, 'no id'], [2, 'no id either']])
  // A ping with an id after them: its pong comes after anything the publishes caused on this connection.
  pub.send({ type: 'ping', id: 'after' })
  await pub.waitFor((f) => f.type === 'pong' && f.id === 'after')
  assert.deepEqual(pub.frames.map((f) => f.type), ['connected', 'pong'], 'no ack and no error for publishes without id')
})

eachBus('unknown: "refuse" refuses unlisted namespaces with UNKNOWN_NAMESPACE on WS subscribe and publish, REST publish and SSE', async (t, bus) => {
  const [a] = await nodes(t, bus.redisUrl, config({ namespaces: { room: {} }, unknown: 'refuse' }))
  const c = await client(t, a.wsUrl)
  for (const ch of ['nope:1', 'plain']) {
    c.send({ type: 'subscribe', channel: ch, id: 'sub-' + ch })
    const sub = await c.waitFor((f) => f.id === 'sub-' + ch && (f.type === 'ack' || f.type === 'error'))
    assert.equal(sub.type, 'error', ch)
    assert.equal(sub.code, 'HERALD_ERR_UNKNOWN_NAMESPACE', ch)
    assert.equal(sub.channel, ch)
    const pub = await request(c, { type: 'publish', channel: ch, data: { x: 1 }, id: 'pub-' + ch })
    assert.equal(pub.type, 'error', ch)
    assert.equal(pub.code, 'HERALD_ERR_UNKNOWN_NAMESPACE', ch)
    assert.equal(pub.channel, ch)
    const rest = await publish(a.url, ch, { x: 1 })
    assert.equal(rest.status, 404, JSON.stringify(rest.body))
    assert.equal(rest.body.code, 'HERALD_ERR_UNKNOWN_NAMESPACE')
    await assert.rejects(SseClient.open(a.url, ['room:ok', ch]), (err: any) => {
      assert.equal(err.status, 404)
      assert.equal(err.body.code, 'HERALD_ERR_UNKNOWN_NAMESPACE')
      return true
    })
  }
  assert.equal(c.frames.some((f) => f.type === 'subscribed'), false)

  // The listed namespace works on every path.
  await c.subscribe('room:ok')
  const ok = await request(c, { type: 'publish', channel: 'room:ok', data: { x: 'ws' }, id: 'ok' })
  assert.equal(ok.type, 'ack', JSON.stringify(ok))
  assert.equal((await publish(a.url, 'room:ok', { x: 'rest' })).status, 201)
  assert.deepEqual((await c.events('room:ok', 2)).map((e) => e.data.x), ['ws', 'rest'])
  const sse = await SseClient.open(a.url, ['room:ok'], { cursor: undefined })
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed' && m.data.channel === 'room:ok')
})

import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { token, startHerald, eachBus, publish, WsClient, type Frame, type TestApp } from './helper.js'

/**
 * Every bad input gets a clear error, and the server keeps serving everyone else: after each one a normal
 * publish still succeeds and reaches a WebSocket subscriber that was connected all along.
 */

const AUTH = { authorization: `Bearer ${token()}` }
const LIMITS = { maxBodyBytes: 1024, maxFrameBytes: 1024, maxSubscriptions: 3 }

interface Herald extends TestApp {
  /** Publishes on a canary channel and waits for the long-lived subscriber to get it. */
  stillServing: (what: string) => Promise<void>
}

async function start (t: TestContext, redisUrl?: string): Promise<Herald> {
  const app = await startHerald(t, { redisUrl, config: LIMITS })
  const watcher = await WsClient.connect(app.wsUrl)
  t.after(() => watcher.close())
  await watcher.subscribe('canary')
  let n = 0
  return {
    ...app,
    stillServing: async (what) => {
      n++
      const res = await publish(app.url, 'canary', { n })
      assert.equal(res.status, 201, `after ${what}: publish still works`)
      assert.equal(res.body.offset, n, `after ${what}: offset`)
      const events = await watcher.events('canary', n, 3000)
      assert.deepEqual(events[n - 1].data, { n }, `after ${what}: the subscriber still gets events`)
    }
  }
}

async function json (res: Response): Promise<{ status: number, body: any, headers: Headers }> {
  const text = await res.text()
  let body: any = text
  try { body = JSON.parse(text) } catch {}
  return { status: res.status, body, headers: res.headers }
}

function assertError (answer: { status: number, body: any }, status: number, code: string, what: string): void {
  assert.equal(answer.status, status, `${what}: status (body ${JSON.stringify(answer.body)})`)
  assert.equal(answer.body?.code, code, `${what}: code (body ${JSON.stringify(answer.body)})`)
  assert.equal(answer.body?.statusCode, status, `${what}: statusCode in body`)
  assert.ok(typeof answer.body?.message === 'string' && answer.body.message.length > 0, `${what}: a message`)
}

async function post (base: string, channel: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<{ status: number, body: any, headers: Headers }> {
  return await json(await fetch(`${base}/v1/channels/${encodeURIComponent(channel)}/events`, { method: 'POST', headers: { ...AUTH, ...headers }, body }))
}

async function get (base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number, body: any, headers: Headers }> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), 5000)
  try {
    const res = await fetch(base + path, { headers: { ...AUTH, ...headers }, signal: controller.signal })
    if (res.status === 200 && (res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
      controller.abort()
      return { status: 200, body: 'stream', headers: res.headers }
    }
    return await json(res)
  } finally {
    clearTimeout(timer)
  }
}

async function historyOffset (base: string, channel: string): Promise<number> {
  const res = await get(base, `/v1/channels/${encodeURIComponent(channel)}/events`)
  assert.equal(res.status, 200)
  return res.body.offset as number
}

/** Sends a raw frame and returns the next error frame (frames are answered in order). */
async function errorFor (ws: WsClient, frame: string | Buffer, binary = false): Promise<Frame> {
  const from = ws.frames.length
  if (Buffer.isBuffer(frame)) ws.socket.send(frame, { binary })
  else ws.send(frame)
  return await ws.waitFor((f) => f.type === 'error', 3000, from)
}

function cursorOf (value: unknown): string { return 'c1.' + Buffer.from(JSON.stringify(value)).toString('base64url') }

// ================================================================== REST bodies

test('REST publish: malformed, incomplete, too large and wrongly typed bodies', async (t) => {
  const h = await start(t)
  assertError(await post(h.url, 'room', '{"data":'), 400, 'HERALD_ERR_MALFORMED_JSON', 'truncated JSON')
  await h.stillServing('truncated JSON')
  assertError(await post(h.url, 'room', "{'data': 1}"), 400, 'HERALD_ERR_MALFORMED_JSON', 'single-quoted JSON')
  assertError(await post(h.url, 'room', ''), 400, 'HERALD_ERR_MALFORMED_JSON', 'empty JSON body')
  await h.stillServing('empty body')

  const missing = await post(h.url, 'room', JSON.stringify({ event: 'x' }))
  assertError(missing, 400, 'HERALD_ERR_VALIDATION', 'missing data')
  assert.match(missing.body.message, /data/)
  assertError(await post(h.url, 'room', JSON.stringify([1, 2])), 400, 'HERALD_ERR_VALIDATION', 'array body')
  assertError(await post(h.url, 'room', JSON.stringify({ data: 1, event: '' })), 400, 'HERALD_ERR_VALIDATION', 'empty event name')
  assertError(await post(h.url, 'room', JSON.stringify({ data: 1, id: 'x'.repeat(129) })), 400, 'HERALD_ERR_VALIDATION', 'id over 128 characters')
  await h.stillServing('validation errors')

  const big = await post(h.url, 'room', JSON.stringify({ data: 'x'.repeat(2000) }))
  assertError(big, 413, 'HERALD_ERR_BODY_TOO_LARGE', 'body over maxBodyBytes')
  assert.match(big.body.message, /1024/)
  await h.stillServing('body too large')

  // curl -d sends application/x-www-form-urlencoded unless told otherwise.
  assertError(await post(h.url, 'room', 'data=1', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', 'form body')
  assertError(await post(h.url, 'room', '<data>1</data>', { 'content-type': 'application/xml' }), 415, 'HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', 'xml body')
  // text/plain has a parser in Fastify; it must still be refused with a Herald error, not published.
  const plain = await post(h.url, 'room', '{"data":1}', { 'content-type': 'text/plain' })
  assert.ok(plain.status === 400 || plain.status === 415, `text/plain: ${plain.status}`)
  assert.match(plain.body.code, /^HERALD_ERR_(VALIDATION|UNSUPPORTED_MEDIA_TYPE)$/)
  await h.stillServing('wrong content types')

  // None of the refused bodies was published.
  assert.equal(await historyOffset(h.url, 'room'), 0)
})

test('REST publish: an unknown body field is refused, not silently dropped', async (t) => {
  const h = await start(t)
  const res = await post(h.url, 'room', JSON.stringify({ data: { a: 1 }, colour: 'red' }))
  assertError(res, 400, 'HERALD_ERR_VALIDATION', 'unknown field "colour"')
  assert.equal(await historyOffset(h.url, 'room'), 0, 'nothing was published')
  await h.stillServing('unknown body field')
})

test('REST publish: Idempotency-Key header and body id must agree', async (t) => {
  const h = await start(t)
  const differ = await post(h.url, 'room', JSON.stringify({ data: 1, id: 'body-key' }), { 'content-type': 'application/json', 'idempotency-key': 'header-key' })
  assertError(differ, 400, 'HERALD_ERR_VALIDATION', 'header and body id differ')
  assert.match(differ.body.message, /Idempotency-Key/i)
  assert.equal(await historyOffset(h.url, 'room'), 0)
  await h.stillServing('idempotency mismatch')
  // Agreeing keys are fine, and a retry is a duplicate.
  const same = await post(h.url, 'room', JSON.stringify({ data: 1, id: 'k1' }), { 'content-type': 'application/json', 'idempotency-key': 'k1' })
  assert.equal(same.status, 201)
  const again = await post(h.url, 'room', JSON.stringify({ data: 1 }), { 'content-type': 'application/json', 'idempotency-key': 'k1' })
  assert.equal(again.status, 201)
  assert.deepEqual([again.body.offset, again.body.duplicate], [1, true])
  // The same key with other content conflicts.
  const conflict = await post(h.url, 'room', JSON.stringify({ data: 2, id: 'k1' }))
  assertError(conflict, 409, 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 'same key, other data')
  await h.stillServing('idempotency conflict')
})

// ================================================================== channel names

const BAD_NAMES = ['a b', '{x}', '*', 'chat:*', 'a/b', 'é']

test('invalid channel names are 400 HERALD_ERR_BAD_CHANNEL on REST, WebSocket, SSE and long-poll', async (t) => {
  const h = await start(t)
  const ws = await WsClient.connect(h.wsUrl)
  t.after(() => ws.close())
  for (const name of BAD_NAMES) {
    const what = JSON.stringify(name)
    assertError(await post(h.url, name, JSON.stringify({ data: 1 })), 400, 'HERALD_ERR_BAD_CHANNEL', `REST publish ${what}`)
    assertError(await get(h.url, `/v1/channels/${encodeURIComponent(name)}/events`), 400, 'HERALD_ERR_BAD_CHANNEL', `REST history ${what}`)
    assertError(await get(h.url, `/v1/sse?channel=${encodeURIComponent(name)}`), 400, 'HERALD_ERR_BAD_CHANNEL', `SSE ${what}`)
    assertError(await get(h.url, `/v1/poll?timeout=0&channel=${encodeURIComponent(name)}`), 400, 'HERALD_ERR_BAD_CHANNEL', `poll ${what}`)
    // One bad name among good ones refuses the whole stream request.
    assertError(await get(h.url, `/v1/sse?channel=ok&channel=${encodeURIComponent(name)}`), 400, 'HERALD_ERR_BAD_CHANNEL', `SSE ok + ${what}`)
    for (const type of ['subscribe', 'unsubscribe', 'publish']) {
      const err = await errorFor(ws, JSON.stringify({ type, channel: name, data: 1, id: `${type}-${name}` }))
      assert.equal(err.code, 'HERALD_ERR_BAD_CHANNEL', `ws ${type} ${what}`)
      assert.equal(err.id, `${type}-${name}`, `ws ${type} ${what}: id echoed`)
    }
    await h.stillServing(`channel ${what}`)
  }
  // An empty name on the stream transports (REST cannot even route it).
  assertError(await get(h.url, '/v1/sse?channel='), 400, 'HERALD_ERR_BAD_CHANNEL', 'SSE empty channel')
  assertError(await get(h.url, '/v1/poll?timeout=0&channel='), 400, 'HERALD_ERR_BAD_CHANNEL', 'poll empty channel')
  assert.equal((await errorFor(ws, JSON.stringify({ type: 'subscribe', channel: '' }))).code, 'HERALD_ERR_BAD_CHANNEL')
  assert.equal(ws.closed, null)
})

test('channel name length: 128 characters work everywhere, 129 are HERALD_ERR_BAD_CHANNEL everywhere', async (t) => {
  const h = await start(t)
  const ws = await WsClient.connect(h.wsUrl)
  t.after(() => ws.close())
  const long = 'n:' + 'a'.repeat(126)
  const tooLong = 'a'.repeat(129)
  assert.equal(long.length, 128)

  // 129 on the stream transports and the WebSocket.
  assertError(await get(h.url, `/v1/sse?channel=${tooLong}`), 400, 'HERALD_ERR_BAD_CHANNEL', 'SSE 129 chars')
  assertError(await get(h.url, `/v1/poll?timeout=0&channel=${tooLong}`), 400, 'HERALD_ERR_BAD_CHANNEL', 'poll 129 chars')
  assert.equal((await errorFor(ws, JSON.stringify({ type: 'subscribe', channel: tooLong, id: 'too-long' }))).code, 'HERALD_ERR_BAD_CHANNEL')
  // 128 on the WebSocket and SSE (a short id: the helper's would exceed the 128-character id limit).
  ws.send({ type: 'subscribe', channel: long, id: 'long' })
  await ws.waitFor((f) => f.type === 'subscribed' && f.channel === long)
  assert.equal((await get(h.url, `/v1/sse?channel=${encodeURIComponent(long)}`)).status, 200)
  await h.stillServing('long names on streams')

  // REST must agree with the other transports on what a channel name is.
  assertError(await post(h.url, tooLong, JSON.stringify({ data: 1 })), 400, 'HERALD_ERR_BAD_CHANNEL', 'REST publish 129 chars')
  assertError(await get(h.url, `/v1/channels/${tooLong}/events`), 400, 'HERALD_ERR_BAD_CHANNEL', 'REST history 129 chars')
  const published = await post(h.url, long, JSON.stringify({ data: 'long' }))
  assert.equal(published.status, 201, `REST publish on a valid 128-character channel: ${JSON.stringify(published.body)}`)
  const [event] = await ws.events(long, 1)
  assert.equal(event.data, 'long')
  assert.equal((await get(h.url, `/v1/channels/${encodeURIComponent(long)}/events`)).status, 200, 'REST history on a 128-character channel')
  await h.stillServing('long names on REST')
})

// ================================================================== history, cursors, stream requests

test('history: limit above HISTORY_LIMIT_MAX, negative or non-numeric since are 400 VALIDATION', async (t) => {
  const h = await startHerald(t, { config: { history: { size: 100, ttlSeconds: 3600, metaTtlSeconds: 0, limitMax: 50 } } })
  assert.equal((await get(h.url, '/v1/channels/room/events?limit=50')).status, 200)
  const over = await get(h.url, '/v1/channels/room/events?limit=51')
  assertError(over, 400, 'HERALD_ERR_VALIDATION', 'limit 51 > 50')
  assert.match(over.body.message, /50/)
  assertError(await get(h.url, '/v1/channels/room/events?since=-1'), 400, 'HERALD_ERR_VALIDATION', 'since -1')
  assertError(await get(h.url, '/v1/channels/room/events?since=abc'), 400, 'HERALD_ERR_VALIDATION', 'since abc')
  assertError(await get(h.url, '/v1/channels/room/events?limit=-5'), 400, 'HERALD_ERR_VALIDATION', 'limit -5')
  assertError(await get(h.url, '/v1/channels/room/events?since=1.5'), 400, 'HERALD_ERR_VALIDATION', 'since 1.5')
  assert.equal((await publish(h.url, 'room', 1)).status, 201)
  assert.equal((await get(h.url, '/v1/channels/room/events?since=0&limit=10')).body.events.length, 1)
})

test('history: a request without limit works when HISTORY_LIMIT_MAX is below the default limit', async (t) => {
  // HISTORY_LIMIT_MAX may be set as low as 1; a plain history read is not a bad input then.
  const h = await startHerald(t, { config: { history: { size: 100, ttlSeconds: 3600, metaTtlSeconds: 0, limitMax: 50 } } })
  for (let i = 1; i <= 60; i++) assert.equal((await publish(h.url, 'room', i)).status, 201)
  const res = await get(h.url, '/v1/channels/room/events')
  assert.equal(res.status, 200, `GET history without limit: ${JSON.stringify(res.body)}`)
  assert.equal(res.body.events.length, 50, 'the default limit is capped at HISTORY_LIMIT_MAX')
  assert.equal(res.body.events[0].data, 1)
})

test('SSE and long-poll: bad cursors are 400 HERALD_ERR_BAD_CURSOR, a missing channel is 400', async (t) => {
  const h = await start(t)
  const bad: Array<[string, string]> = [
    ['garbage', 'garbage'],
    ['c1. + garbage', 'c1.!!!not~base64***'],
    ['c1. + empty', 'c1.'],
    ['base64 of an object', cursorOf({ room: 1 })],
    ['base64 of a list of strings', cursorOf(['room', 1, 'e'])],
    ['position with two fields', cursorOf([['room', 1]])],
    ['negative offset', cursorOf([['room', -1, 'e']])],
    ['fractional offset', cursorOf([['room', 1.5, 'e']])],
    ['bad channel in cursor', cursorOf([['a b', 1, 'e']])],
    ['empty epoch', cursorOf([['room', 1, '']])],
    ['epoch over 64 characters', cursorOf([['room', 1, 'e'.repeat(65)]])]
  ]
  for (const [what, cursor] of bad) {
    const q = encodeURIComponent(cursor)
    assertError(await get(h.url, `/v1/sse?channel=room&cursor=${q}`), 400, 'HERALD_ERR_BAD_CURSOR', `SSE ?cursor= ${what}`)
    assertError(await get(h.url, '/v1/sse?channel=room', { 'last-event-id': cursor }), 400, 'HERALD_ERR_BAD_CURSOR', `SSE Last-Event-ID ${what}`)
    assertError(await get(h.url, `/v1/poll?channel=room&timeout=0&cursor=${q}`), 400, 'HERALD_ERR_BAD_CURSOR', `poll ${what}`)
  }
  await h.stillServing('bad cursors')
  // A well-formed cursor is accepted.
  assert.equal((await get(h.url, `/v1/poll?channel=room&timeout=0&cursor=${cursorOf([['room', 0, 'e']])}`)).status, 200)

  for (const path of ['/v1/sse', '/v1/poll?timeout=0']) {
    const res = await get(h.url, path)
    assertError(res, 400, 'HERALD_ERR_VALIDATION', `${path} without channel`)
    assert.match(res.body.message, /channel/)
  }
  await h.stillServing('missing channel')
})

test('SSE and long-poll: more channels than maxSubscriptions is 400 HERALD_ERR_TOO_MANY_SUBSCRIPTIONS', async (t) => {
  const h = await start(t)
  const four = ['a', 'b', 'c', 'd'].map((c) => `channel=${c}`).join('&')
  const three = ['a', 'b', 'c', 'a'].map((c) => `channel=${c}`).join('&') // duplicates count once
  const sse = await get(h.url, `/v1/sse?${four}`)
  assertError(sse, 400, 'HERALD_ERR_TOO_MANY_SUBSCRIPTIONS', 'SSE with 4 channels')
  assert.match(sse.body.message, /3/)
  assertError(await get(h.url, `/v1/poll?timeout=0&${four}`), 400, 'HERALD_ERR_TOO_MANY_SUBSCRIPTIONS', 'poll with 4 channels')
  assert.equal((await get(h.url, `/v1/sse?${three}`)).status, 200)
  assert.equal((await get(h.url, `/v1/poll?timeout=0&${three}`)).status, 200)
  await h.stillServing('too many stream channels')
})

// ================================================================== WebSocket frames

test('WebSocket: every bad frame is answered by an error frame and the connection stays open', async (t) => {
  const h = await start(t)
  const ws = await WsClient.connect(h.wsUrl)
  t.after(() => ws.close())
  await ws.waitFor((f) => f.type === 'connected')
  const expect = async (frame: string | Buffer, code: string, what: string, id?: string, binary = false): Promise<Frame> => {
    const err = await errorFor(ws, frame, binary)
    assert.equal(err.code, code, `${what}: ${JSON.stringify(err)}`)
    assert.ok(typeof err.message === 'string' && err.message.length > 0, `${what}: message`)
    if (id !== undefined) assert.equal(err.id, id, `${what}: id echoed`)
    assert.equal(ws.closed, null, `${what}: still open`)
    return err
  }

  await expect('this is not json', 'HERALD_ERR_MALFORMED_JSON', 'non-JSON text')
  await expect('{"type":"subscribe",', 'HERALD_ERR_MALFORMED_JSON', 'truncated JSON')
  await expect('[1,2,3]', 'HERALD_ERR_BAD_FRAME', 'JSON array')
  await expect('42', 'HERALD_ERR_BAD_FRAME', 'JSON number')
  await expect('null', 'HERALD_ERR_BAD_FRAME', 'JSON null')
  await expect('"subscribe"', 'HERALD_ERR_BAD_FRAME', 'JSON string')
  await expect(JSON.stringify({ type: 'teleport', id: 'u-1' }), 'HERALD_ERR_UNKNOWN_FRAME', 'unknown type', 'u-1')
  await expect(JSON.stringify({ channel: 'room', id: 'u-2' }), 'HERALD_ERR_UNKNOWN_FRAME', 'no type', 'u-2')
  await expect(JSON.stringify({ type: 'toString', id: 'u-3' }), 'HERALD_ERR_UNKNOWN_FRAME', 'inherited property as type', 'u-3')
  await expect(JSON.stringify({ type: 'subscribe', id: 's-1' }), 'HERALD_ERR_BAD_FRAME', 'subscribe without channel', 's-1')
  await expect(JSON.stringify({ type: 'subscribe', channel: 'room', extra: true, id: 's-2' }), 'HERALD_ERR_BAD_FRAME', 'subscribe with an unknown field', 's-2')
  await expect(JSON.stringify({ type: 'subscribe', channel: 'room', since: { offset: -1, epoch: 'e' }, id: 's-3' }), 'HERALD_ERR_BAD_FRAME', 'subscribe with a negative since', 's-3')
  await expect(JSON.stringify({ type: 'publish', channel: 'room', id: 'p-1' }), 'HERALD_ERR_BAD_FRAME', 'publish without data', 'p-1')
  await expect(JSON.stringify({ type: 'publish', channel: 'room', data: 1, id: '' }), 'HERALD_ERR_BAD_FRAME', 'publish with an empty id')
  await expect(Buffer.from(JSON.stringify({ type: 'ping', id: 'bin' })), 'HERALD_ERR_BAD_FRAME', 'binary frame', undefined, true)
  await h.stillServing('malformed frames')

  // A frame above maxFrameBytes (1024) is refused without being processed; the connection survives.
  const big = await expect(JSON.stringify({ type: 'publish', channel: 'room', data: 'x'.repeat(2000), id: 'big' }), 'HERALD_ERR_FRAME_TOO_LARGE', 'frame over maxFrameBytes')
  assert.match(big.message, /1024/)
  assert.equal(await historyOffset(h.url, 'room'), 0, 'the oversized publish was not stored')

  // Subscription state errors.
  await ws.subscribe('room')
  await expect(JSON.stringify({ type: 'subscribe', channel: 'room', id: 'dup' }), 'HERALD_ERR_ALREADY_SUBSCRIBED', 'double subscribe', 'dup')
  await expect(JSON.stringify({ type: 'unsubscribe', channel: 'elsewhere', id: 'nope' }), 'HERALD_ERR_NOT_SUBSCRIBED', 'unsubscribe of a non-subscribed channel', 'nope')
  await h.stillServing('subscription state errors')

  // Still fully working: ping, publish over the socket, receive it.
  ws.send({ type: 'ping', id: 'still-there' })
  await ws.waitFor((f) => f.type === 'pong' && f.id === 'still-there')
  ws.send({ type: 'publish', channel: 'room', data: { fine: true }, id: 'ok-pub' })
  assert.equal((await ws.waitFor((f) => f.type === 'ack' && f.id === 'ok-pub')).offset, 1)
  const [event] = await ws.events('room', 1)
  assert.deepEqual(event.data, { fine: true })
  // A double subscribe did not duplicate delivery.
  assert.equal(ws.frames.filter((f) => f.type === 'event' && f.channel === 'room').length, 1)
})

test('WebSocket: the subscription after maxSubscriptions is refused with an error frame', async (t) => {
  const h = await start(t)
  const ws = await WsClient.connect(h.wsUrl)
  t.after(() => ws.close())
  for (const c of ['a', 'b', 'c']) await ws.subscribe(c)
  const err = await errorFor(ws, JSON.stringify({ type: 'subscribe', channel: 'd', id: 'fourth' }))
  assert.equal(err.code, 'HERALD_ERR_TOO_MANY_SUBSCRIPTIONS')
  assert.equal(err.id, 'fourth')
  assert.equal(err.channel, 'd')
  assert.equal(ws.closed, null)
  // d is not subscribed: its events do not arrive, a's do.
  await publish(h.url, 'd', 'not for you')
  await publish(h.url, 'a', 'for you')
  await ws.events('a', 1)
  assert.equal(ws.frames.some((f) => f.type === 'event' && f.channel === 'd'), false)
  // After an unsubscribe there is room again.
  ws.send({ type: 'unsubscribe', channel: 'b', id: 'unsub-b' })
  await ws.waitFor((f) => f.type === 'ack' && f.id === 'unsub-b')
  await ws.subscribe('d')
  await h.stillServing('too many ws subscriptions')
})

eachBus('a storm of 200 bad frames from one client does not disturb another client', async (t, bus) => {
  const h = await start(t, bus.redisUrl)
  const victim = await WsClient.connect(h.wsUrl)
  t.after(() => victim.close())
  await victim.subscribe('calm')
  const attacker = await WsClient.connect(h.wsUrl)
  t.after(() => attacker.close())
  await attacker.waitFor((f) => f.type === 'connected')
  const junk = ['nope', '[]', '7', JSON.stringify({ type: 'bogus' }), JSON.stringify({ type: 'subscribe' }), JSON.stringify({ type: 'publish', channel: 'x y', data: 1 }), 'x'.repeat(1500)]
  for (let i = 0; i < 200; i++) attacker.send(junk[i % junk.length])
  // Meanwhile the other client's subscription keeps getting events, in order.
  for (let i = 1; i <= 5; i++) assert.equal((await publish(h.url, 'calm', { i })).status, 201)
  const events = await victim.events('calm', 5, 3000)
  assert.deepEqual(events.map((e) => e.data.i), [1, 2, 3, 4, 5])
  // The attacker got one error per bad frame (or was cut off for policy violation); nothing it sent was published.
  await Promise.race([
    attacker.waitFor(() => attacker.frames.filter((f) => f.type === 'error').length >= 200, 3000),
    attacker.waitClosed(3000)
  ]).catch(() => {})
  const errors = attacker.frames.filter((f) => f.type === 'error')
  if (attacker.closed === null) assert.equal(errors.length, 200)
  else assert.equal(attacker.closed.code, 4008)
  assert.ok(errors.every((f) => typeof f.code === 'string' && f.code.startsWith('HERALD_ERR_')))
  assert.equal(await historyOffset(h.url, 'x'), 0)
  await h.stillServing('a storm of bad frames')
})

// ================================================================== routes

test('an unknown route is 404 HERALD_ERR_NOT_FOUND; a plain GET /v1/ws is 426 with upgrade: websocket', async (t) => {
  const h = await start(t)
  for (const path of ['/nope', '/v1/nothing', '/v1/channels/room', '/v2/channels/room/events']) {
    const res = await get(h.url, path)
    assertError(res, 404, 'HERALD_ERR_NOT_FOUND', path)
    assert.match(res.body.message, new RegExp(path.replace(/\//g, '\\/')))
  }
  const ws = await json(await fetch(`${h.url}/v1/ws`, { headers: AUTH }))
  assertError(ws, 426, 'HERALD_ERR_UPGRADE_REQUIRED', 'plain GET /v1/ws')
  assert.equal(ws.headers.get('upgrade'), 'websocket')
  // Also without a token: the answer is about the upgrade, not the token.
  const anon = await json(await fetch(`${h.url}/v1/ws`))
  assert.equal(anon.status, 426)
  assert.equal(anon.headers.get('upgrade'), 'websocket')
  await h.stillServing('unknown routes')
})

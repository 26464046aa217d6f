import { test, describe, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { execFile } from 'node:child_process'
import { startHerald, startRedis, redisSkipReason, publish, token, until, WsClient, SseClient } from './helper.js'
import { defaultConfig, type HeraldConfig } from '../src/config.js'

/**
 * Admission and rate limits: connections per node and per token subject, the WebSocket frame rate and size,
 * the REST rate limit (alone and shared by two nodes through Redis), and the Origin allow-list with CORS.
 */

const DEFAULTS = defaultConfig()

/** Runs redis-cli against a private Redis; resolves with its trimmed output. */
async function redisCli (port: number, ...args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile('redis-cli', ['-p', String(port), ...args], (err, out) => { if (err !== null) reject(err); else resolve(out.trim()) })
  })
}

/** The default limits with some changed (the plugin's `config` is merged shallowly). */
function limits (over: Partial<HeraldConfig['limits']>): Pick<HeraldConfig, 'limits'> {
  return { limits: { ...DEFAULTS.limits, ...over } }
}

/** Connects a WebSocket, resolving with the client or with the HTTP status and body of a refused upgrade. */
async function tryWs (wsUrl: string, opts: { token?: string, headers?: Record<string, string> } = {}): Promise<{ client?: WsClient, status: number, body?: any }> {
  try {
    const client = await WsClient.connect(wsUrl, opts)
    return { client, status: 101 }
  } catch (err) {
    const e = err as { status?: number, body?: any }
    if (e.status === undefined) throw err
    return { status: e.status, body: e.body }
  }
}

async function trySse (url: string, channels: string[], opts: { token?: string } = {}): Promise<{ client?: SseClient, status: number, body?: any }> {
  try {
    const client = await SseClient.open(url, channels, opts)
    return { client, status: 200 }
  } catch (err) {
    const e = err as { status?: number, body?: any }
    if (e.status === undefined) throw err
    return { status: e.status, body: e.body }
  }
}

/** A raw HTTP request (node:http), so headers such as Origin go out exactly as given. */
async function rawRequest (url: string, opts: { method?: string, headers?: Record<string, string>, body?: string } = {}): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      // An SSE stream that was accepted never ends by itself: the first chunk is enough.
      const isStream = String(res.headers['content-type'] ?? '').startsWith('text/event-stream')
      res.on('data', (c: string) => {
        body += c
        if (isStream) { req.destroy(); resolve({ status: res.statusCode!, headers: res.headers, body }) }
      })
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }))
    })
    req.on('error', reject)
    if (opts.body !== undefined) req.write(opts.body)
    req.end()
  })
}

function closeAll (t: TestContext, clients: Array<{ close: () => void } | undefined>): void {
  t.after(() => { for (const c of clients) c?.close() })
}

// ---------------------------------------------------------------- connection limits

test('maxConnections: WebSocket, SSE and waiting long-poll connections together are capped per node; a freed slot is reusable', async (t) => {
  const { app, url, wsUrl } = await startHerald(t, { config: limits({ maxConnections: 3 }) })
  // Different subjects, so only the node-wide limit can apply.
  const a = await tryWs(wsUrl, { token: token({ sub: 'a' }) })
  const b = await trySse(url, ['lim:1'], { token: token({ sub: 'b' }) })
  const c = await tryWs(wsUrl, { token: token({ sub: 'c' }) })
  closeAll(t, [a.client, b.client, c.client])
  assert.deepEqual([a.status, b.status, c.status], [101, 200, 101])
  await b.client!.waitFor((m) => m.data.type === 'subscribed')
  assert.equal(app.herald.connections.count('websocket') + app.herald.connections.count('sse'), 3)

  const ws4 = await tryWs(wsUrl, { token: token({ sub: 'd' }) })
  closeAll(t, [ws4.client])
  assert.equal(ws4.status, 429, 'the fourth connection (WebSocket) is refused before the upgrade')
  assert.equal(ws4.body.code, 'HERALD_ERR_TOO_MANY_CONNECTIONS')
  const sse4 = await trySse(url, ['lim:1'], { token: token({ sub: 'e' }) })
  closeAll(t, [sse4.client])
  assert.equal(sse4.status, 429, 'the fourth connection (SSE) is refused')
  assert.equal(sse4.body.code, 'HERALD_ERR_TOO_MANY_CONNECTIONS')
  // A waiting long-poll is a connection too: refused the same way.
  const polled = await fetch(`${url}/v1/poll?channel=lim:1&timeout=0`, { headers: { authorization: `Bearer ${token({ sub: 'f' })}` } })
  assert.equal(polled.status, 429)
  assert.equal((await polled.json() as { code: string }).code, 'HERALD_ERR_TOO_MANY_CONNECTIONS')

  // The refused ones did not leak a slot, and the admitted ones still work.
  assert.equal(app.herald.connections.count('websocket') + app.herald.connections.count('sse'), 3)
  await a.client!.subscribe('lim:1')
  assert.equal((await publish(url, 'lim:1', { n: 1 })).status, 201)
  assert.equal((await a.client!.events('lim:1', 1))[0].data.n, 1)
  await b.client!.waitEvents('lim:1', 1)

  // Closing one frees its slot.
  c.client!.close()
  await c.client!.waitClosed()
  await until(() => app.herald.connections.count('websocket') === 1, 'the closed socket is no longer counted')
  const again = await tryWs(wsUrl, { token: token({ sub: 'g' }) })
  closeAll(t, [again.client])
  assert.equal(again.status, 101)
})

test('maxConnectionsPerSub: one subject is capped on WebSocket and SSE together; other subjects are not affected', async (t) => {
  const { app, url, wsUrl } = await startHerald(t, { config: limits({ maxConnectionsPerSub: 2 }) })
  const alice = token({ sub: 'alice' })
  const w1 = await tryWs(wsUrl, { token: alice })
  const s1 = await trySse(url, ['per:1'], { token: alice })
  closeAll(t, [w1.client, s1.client])
  assert.deepEqual([w1.status, s1.status], [101, 200])

  const w2 = await tryWs(wsUrl, { token: alice })
  const s2 = await trySse(url, ['per:1'], { token: token({ sub: 'alice' }) }) // another token, same subject
  closeAll(t, [w2.client, s2.client])
  assert.equal(w2.status, 429)
  assert.equal(w2.body.code, 'HERALD_ERR_TOO_MANY_CONNECTIONS')
  assert.match(w2.body.message, /alice/)
  assert.equal(s2.status, 429)
  assert.equal(s2.body.code, 'HERALD_ERR_TOO_MANY_CONNECTIONS')

  const bob = await tryWs(wsUrl, { token: token({ sub: 'bob' }) })
  const bobSse = await trySse(url, ['per:1'], { token: token({ sub: 'bob' }) })
  closeAll(t, [bob.client, bobSse.client])
  assert.deepEqual([bob.status, bobSse.status], [101, 200], 'another subject has its own allowance')
  assert.equal(app.herald.connections.countOf('alice'), 2)

  // alice's SSE stream ends: she may connect once more, and only once.
  s1.client!.close()
  await until(() => app.herald.connections.countOf('alice') === 1, 'the closed stream is no longer counted for alice')
  const w3 = await tryWs(wsUrl, { token: alice })
  const w4 = await tryWs(wsUrl, { token: alice })
  closeAll(t, [w3.client, w4.client])
  assert.deepEqual([w3.status, w4.status], [101, 429])
})

// ---------------------------------------------------------------- WebSocket frames

test('frame rate: frames over the token bucket get RATE_LIMITED error frames, then more than wsBurst refused close the socket with 4008', async (t) => {
  // 0.1 frames per second (the lowest WS_RATE): the bucket does not refill noticeably during the test.
  // Server pings every second: a ping sent after the refusals is a barrier (see below); pongs are not frames the
  // rate limit counts.
  const { url, wsUrl } = await startHerald(t, { config: { ...limits({ wsRate: 0.1, wsBurst: 5 }), wsPingIntervalSeconds: 1 } })
  const flooder = await WsClient.connect(wsUrl, { token: token({ sub: 'flooder' }) })
  const bystander = await WsClient.connect(wsUrl, { token: token({ sub: 'bystander' }) })
  closeAll(t, [flooder, bystander])
  await bystander.subscribe('rate:1')

  // The connected frame is not a client frame; the 5 pings are the burst.
  for (let i = 1; i <= 5; i++) flooder.send({ type: 'ping', id: 'p' + i })
  await flooder.waitFor((f) => f.type === 'pong' && f.id === 'p5')
  // 5 more: each refused with an error frame; the socket stays open (refused = wsBurst, not more).
  for (let i = 6; i <= 10; i++) flooder.send({ type: 'ping', id: 'p' + i })
  await until(() => flooder.frames.filter((f) => f.type === 'error').length === 5, '5 RATE_LIMITED error frames')
  const errors = flooder.frames.filter((f) => f.type === 'error')
  assert.ok(errors.every((f) => f.code === 'HERALD_ERR_RATE_LIMITED'), JSON.stringify(errors))
  assert.equal(flooder.frames.filter((f) => f.type === 'pong').length, 5, 'refused frames were not executed')
  // Barrier: a server ping that comes after the fifth error frame. Had the node closed the socket upon the
  // refusals, its close would have come before that ping (one TCP stream, in order), and no ping follows a close.
  let pings = 0
  flooder.socket.on('ping', () => { pings++ })
  await until(() => pings > 0 || flooder.closed !== null, 'a server ping after the refusals', 15_000)
  assert.equal(flooder.closed, null, 'wsBurst refusals do not close the socket yet')

  // One more refusal within 10 s: closed with 4008.
  flooder.send({ type: 'ping', id: 'p11' })
  const closed = await flooder.waitClosed(3000)
  assert.equal(closed.code, 4008)
  assert.equal(flooder.frames.filter((f) => f.type === 'pong').length, 5)

  // Another client was not limited along with it.
  assert.equal((await publish(url, 'rate:1', { after: 'flood' })).status, 201)
  assert.deepEqual((await bystander.events('rate:1', 1)).map((e) => e.data), [{ after: 'flood' }])
  bystander.send({ type: 'ping', id: 'b1' })
  await bystander.waitFor((f) => f.type === 'pong' && f.id === 'b1')
})

test('maxFrameBytes: a larger frame gets FRAME_TOO_LARGE and the socket stays; a frame over the hard limit closes it with 1009', async (t) => {
  const { url, wsUrl } = await startHerald(t, { config: { maxFrameBytes: 1024 } })
  const ws = await WsClient.connect(wsUrl)
  closeAll(t, [ws])
  await ws.subscribe('size:1')

  // Just under the limit is fine.
  const fits = JSON.stringify({ type: 'publish', channel: 'size:1', id: 'fits', data: 'x'.repeat(900) })
  assert.ok(Buffer.byteLength(fits) <= 1024)
  ws.send(fits)
  assert.equal((await ws.waitFor((f) => f.id === 'fits')).type, 'ack')

  const big = JSON.stringify({ type: 'publish', channel: 'size:1', id: 'big', data: 'x'.repeat(2000) })
  ws.send(big)
  const err = await ws.waitFor((f) => f.type === 'error')
  assert.equal(err.code, 'HERALD_ERR_FRAME_TOO_LARGE')
  // Not parsed, so it was neither stored nor delivered.
  assert.equal((await publish(url, 'size:1', { n: 'after' })).status, 201)
  const events = await ws.events('size:1', 2)
  assert.deepEqual(events.map((e) => typeof e.data === 'string' ? 'fits' : e.data.n), ['fits', 'after'])
  assert.equal(events[1].offset, 2, 'the refused frame did not take an offset')
  ws.send({ type: 'ping', id: 'alive' })
  await ws.waitFor((f) => f.type === 'pong' && f.id === 'alive')

  // The WebSocket layer's hard limit: max(4 × maxFrameBytes, 1 MiB).
  ws.send(JSON.stringify({ type: 'publish', channel: 'size:1', data: 'y'.repeat(1024 * 1024 + 10) }))
  const closed = await ws.waitClosed(5000)
  assert.equal(closed.code, 1009)
})

// ---------------------------------------------------------------- REST rate limit

test('REST rate limit: past restMax a subject gets 429 RATE_LIMITED with a Retry-After covering the window; others are not affected', async (t) => {
  const window = 30
  const { url } = await startHerald(t, { config: limits({ restMax: 3, restWindowSeconds: window }) })
  const carol = token({ sub: 'carol' })
  const windowFrom = Date.now() // carol's window begins with her first request, not before this
  for (let i = 1; i <= 3; i++) {
    const ok = await fetch(`${url}/v1/channels/rl:1/events`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${carol}` }, body: JSON.stringify({ data: { i } }) })
    assert.equal(ok.status, 201)
    assert.equal(ok.headers.get('x-ratelimit-limit'), '3')
    assert.equal(ok.headers.get('x-ratelimit-remaining'), String(3 - i))
  }
  const refused = await fetch(`${url}/v1/channels/rl:1/events`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${carol}` }, body: JSON.stringify({ data: { i: 4 } }) })
  assert.equal(refused.status, 429)
  const body = await refused.json() as { code: string, message: string }
  assert.equal(body.code, 'HERALD_ERR_RATE_LIMITED')
  const retryAfter = refused.headers.get('retry-after')
  assert.ok(retryAfter !== null, 'a 429 carries Retry-After')
  assert.match(retryAfter, /^\d+$/)
  // Retrying after Retry-After seconds must be able to succeed: the window (30 s) has barely begun, so the
  // header has to say most of it, not "1". What is left of it is known from this side: the window began no
  // earlier than windowFrom, and the answer was given no later than now (a slow machine only lowers the bound).
  const leftAtLeast = window - (Date.now() - windowFrom) / 1000
  assert.ok(Number(retryAfter) >= leftAtLeast && Number(retryAfter) <= window,
    `Retry-After is ${retryAfter} s while the window still has at least ${leftAtLeast.toFixed(2)} s to run (body: ${body.message}); a client retrying after it is refused again`)
  // Exposed to browsers.
  const cors = await fetch(`${url}/v1/channels/rl:1/events`, { method: 'POST', headers: { origin: 'https://app.example', 'content-type': 'application/json', authorization: `Bearer ${carol}` }, body: '{"data":1}' })
  assert.equal(cors.status, 429)
  assert.match(cors.headers.get('access-control-expose-headers') ?? '', /retry-after/i)

  // The refused publish was not stored; another subject is counted separately.
  const dave = await publish(url, 'rl:1', { i: 'dave' }, { token: token({ sub: 'dave' }) })
  assert.equal(dave.status, 201)
  assert.equal(dave.body.offset, 4, 'three of carol\'s publishes were stored, the refused ones were not')
})

test('REST rate limit with Redis, RATE_LIMIT_SYNC_MS=0: two nodes share one exact count per subject', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const config = limits({ restMax: 4, restWindowSeconds: 60, restSyncMs: 0 })
  const a = await startHerald(t, { redisUrl: redis.url, config })
  const b = await startHerald(t, { redisUrl: redis.url, config })
  const erin = token({ sub: 'erin' })
  const statuses: number[] = []
  for (const node of [a, b, a, b]) statuses.push((await publish(node.url, 'rl:shared', { n: statuses.length }, { token: erin })).status)
  assert.deepEqual(statuses, [201, 201, 201, 201])
  // The fifth request is over the limit on either node: each counts the other's requests too.
  const onA = await publish(a.url, 'rl:shared', { n: 5 }, { token: erin })
  const onB = await publish(b.url, 'rl:shared', { n: 6 }, { token: erin })
  assert.equal(onA.status, 429, 'node A counts the requests made to B')
  assert.equal(onB.status, 429, 'node B counts the requests made to A')
  assert.equal(onA.body.code, 'HERALD_ERR_RATE_LIMITED')
  assert.equal(onB.body.code, 'HERALD_ERR_RATE_LIMITED')
  // The count lives in this Redis, under the configured prefix.
  const keys = await new Promise<string>((resolve, reject) => {
    execFile('redis-cli', ['-p', String(redis.port), '--scan', '--pattern', 'herald-test:rl:*'], (err, out) => { if (err !== null) reject(err); else resolve(out) })
  })
  assert.match(keys, /herald-test:rl:/)
  // Another subject is still admitted on both.
  assert.equal((await publish(a.url, 'rl:shared', { n: 'frank' }, { token: token({ sub: 'frank' }) })).status, 201)
  assert.equal((await publish(b.url, 'rl:shared', { n: 'frank' }, { token: token({ sub: 'frank' }) })).status, 201)
})

test('REST rate limit with Redis, synced counts (default): each node limits at once on its own counts and learns the others\' within a sync interval', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const syncMs = 100
  const config = limits({ restMax: 6, restWindowSeconds: 60, restSyncMs: syncMs })
  const a = await startHerald(t, { redisUrl: redis.url, config })
  const b = await startHerald(t, { redisUrl: redis.url, config })
  const gail = token({ sub: 'gail' })
  const statuses = async (url: string, n: number): Promise<number[]> => {
    const out: number[] = []
    for (let i = 0; i < n; i++) out.push((await publish(url, 'rl:synced', { i }, { token: gail })).status)
    return out
  }
  // The shared counter in Redis, read until it holds what the nodes have sent. Redis answers a node's sync before
  // it answers this later read, and the node (in this process) reads that answer before it can read the next
  // request this test sends it — so once the counter shows a node's sync, that node has learned the count.
  const sharedCount = async (): Promise<number> => {
    const keys = (await redisCli(redis.port, '--scan', '--pattern', 'herald-test:rl:*')).split('\n').filter((k) => k !== '')
    let total = 0
    for (const key of keys) total += Number(await redisCli(redis.port, 'GET', key))
    return total
  }
  const counted = async (n: number, what: string): Promise<void> => {
    await until(async () => (await sharedCount()) >= n, `${what}: the shared count reaches ${n}`, 10_000)
    assert.equal(await sharedCount(), n, what)
  }
  // Four on A: admitted, and counted on A without waiting for Redis.
  assert.deepEqual(await statuses(a.url, 4), [201, 201, 201, 201])
  await counted(4, 'A has sent its four')
  // B has never seen gail: its first request is measured against nothing (admitted: the documented overshoot)
  // and makes B ask Redis at once. From the answer on, B counts A's four: one more, then over the limit.
  assert.deepEqual(await statuses(b.url, 1), [201])
  await counted(5, 'B has synced its first')
  assert.deepEqual(await statuses(b.url, 2), [201, 429])
  // A has not synced since its own four, so it still counts from 4: one more is admitted there, and that
  // request's sync teaches A what B did.
  await counted(7, 'B has sent its two')
  assert.equal((await publish(a.url, 'rl:synced', { i: 'a1' }, { token: gail })).status, 201)
  await counted(8, 'A has synced its fifth')
  const onA = await publish(a.url, 'rl:synced', { i: 'a2' }, { token: gail })
  assert.equal(onA.status, 429, 'node A counts the requests made to B')
  assert.equal(onA.body.code, 'HERALD_ERR_RATE_LIMITED')
  // The shared counter is in this Redis: every request counted (the refused ones too, as the plugin counts).
  const counter = await new Promise<string>((resolve, reject) => {
    execFile('redis-cli', ['-p', String(redis.port), '--scan', '--pattern', 'herald-test:rl:*'], (err, out) => { if (err !== null) reject(err); else resolve(out.trim()) })
  })
  assert.match(counter, /herald-test:rl:/)
  const value = await new Promise<string>((resolve, reject) => {
    execFile('redis-cli', ['-p', String(redis.port), 'GET', counter.split('\n')[0]], (err, out) => { if (err !== null) reject(err); else resolve(out.trim()) })
  })
  assert.ok(Number(value) >= 8, `shared count ${value} holds both nodes' requests`)
})

test('REST rate limit with Redis down: a node keeps limiting on its own counts', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const config = limits({ restMax: 3, restWindowSeconds: 60 })
  const a = await startHerald(t, { redisUrl: redis.url, config })
  await redis.stop()
  const hal = token({ sub: 'hal' })
  // Publishing needs the bus, so these are 503; the limiter still counts them and refuses the fourth.
  const statuses: number[] = []
  for (let i = 0; i < 4; i++) statuses.push((await publish(a.url, 'rl:down', { i }, { token: hal })).status)
  assert.deepEqual(statuses, [503, 503, 503, 429])
})

// ---------------------------------------------------------------- Origin and CORS

describe('Origin allow-list', () => {
  const GOOD = 'https://good.example'
  const EVIL = 'https://evil.example'

  test('WebSocket upgrade: a foreign Origin is refused with 403 and never upgraded; an allowed Origin and no Origin pass', async (t) => {
    const { url, wsUrl } = await startHerald(t, { config: { corsOrigins: [GOOD] } })
    const evil = await tryWs(wsUrl, { headers: { origin: EVIL } })
    closeAll(t, [evil.client])
    assert.equal(evil.status, 403)
    assert.equal(evil.body.code, 'HERALD_ERR_ORIGIN_NOT_ALLOWED')

    // At the HTTP level: a 403 answer, no 101, no Upgrade header.
    const raw = await rawRequest(`${url}/v1/ws`, {
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', origin: EVIL, authorization: `Bearer ${token()}` }
    })
    assert.equal(raw.status, 403)
    assert.equal(raw.headers.upgrade, undefined)
    assert.equal(JSON.parse(raw.body).code, 'HERALD_ERR_ORIGIN_NOT_ALLOWED')

    const good = await tryWs(wsUrl, { headers: { origin: GOOD } })
    const none = await tryWs(wsUrl)
    closeAll(t, [good.client, none.client])
    assert.equal(good.status, 101)
    assert.equal(none.status, 101)
    await good.client!.subscribe('o:1')
    await none.client!.subscribe('o:1')
    assert.equal((await publish(url, 'o:1', { n: 1 })).status, 201)
    await good.client!.events('o:1', 1)
    await none.client!.events('o:1', 1)
  })

  test('SSE: a foreign Origin is refused with 403; an allowed Origin (with its CORS header) and no Origin pass', async (t) => {
    const { url } = await startHerald(t, { config: { corsOrigins: [GOOD, 'https://other.example'] } })
    const headers = { authorization: `Bearer ${token()}`, accept: 'text/event-stream' }
    const evil = await rawRequest(`${url}/v1/sse?channel=o:2`, { headers: { ...headers, origin: EVIL } })
    assert.equal(evil.status, 403)
    assert.equal(JSON.parse(evil.body).code, 'HERALD_ERR_ORIGIN_NOT_ALLOWED')
    assert.equal(evil.headers['access-control-allow-origin'], undefined)

    const good = await rawRequest(`${url}/v1/sse?channel=o:2`, { headers: { ...headers, origin: GOOD } })
    assert.equal(good.status, 200)
    assert.match(String(good.headers['content-type']), /^text\/event-stream/)
    assert.equal(good.headers['access-control-allow-origin'], GOOD, 'the browser may read the stream')
    assert.match(good.body, /"type":"connected"/)

    const none = await rawRequest(`${url}/v1/sse?channel=o:2`, { headers })
    assert.equal(none.status, 200)
    assert.match(none.body, /"type":"connected"/)
  })

  test('CORS: a preflight from an allowed origin is answered with its origin, methods and headers; a foreign one gets no grant', async (t) => {
    const { url } = await startHerald(t, { config: { corsOrigins: [GOOD] } })
    const preflight = (origin: string): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: string }> => rawRequest(`${url}/v1/channels/o:3/events`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, idempotency-key' }
    })
    const ok = await preflight(GOOD)
    assert.ok(ok.status === 204 || ok.status === 200, `preflight status ${ok.status}: ${ok.body}`)
    assert.equal(ok.headers['access-control-allow-origin'], GOOD)
    assert.match(String(ok.headers['access-control-allow-methods']), /POST/)
    const allowHeaders = String(ok.headers['access-control-allow-headers']).toLowerCase()
    for (const h of ['authorization', 'content-type', 'idempotency-key']) assert.ok(allowHeaders.includes(h), `allows ${h}: ${allowHeaders}`)

    const bad = await preflight(EVIL)
    assert.notEqual(bad.headers['access-control-allow-origin'], EVIL)
    assert.equal(bad.headers['access-control-allow-origin'], undefined)

    // The actual request from the allowed origin carries the grant; from the foreign one it does not.
    const post = await rawRequest(`${url}/v1/channels/o:3/events`, { method: 'POST', headers: { origin: GOOD, 'content-type': 'application/json', authorization: `Bearer ${token()}` }, body: '{"data":1}' })
    assert.equal(post.status, 201)
    assert.equal(post.headers['access-control-allow-origin'], GOOD)
    const foreign = await rawRequest(`${url}/v1/channels/o:3/events`, { method: 'POST', headers: { origin: EVIL, 'content-type': 'application/json', authorization: `Bearer ${token()}` }, body: '{"data":2}' })
    assert.equal(foreign.headers['access-control-allow-origin'], undefined)
  })
})

import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import WS from 'ws'
import { encodeCursorText } from '../src/protocol/cursor-codec.js'
import { createClient, type HeraldEvent, type Subscription, type WebSocketConstructor } from '../client/index.js'
import { poll, publish, redisSkipReason, SseClient, startHerald, startRedis, token, until, WsClient, type Frame, type TestApp } from './helper.js'

// Proxy hooks (docs/proxy.md), server-made subscriptions (the `channels` claim) and user-limited channels, against a
// real application: a small Fastify app on a loopback port that answers every hook the way the test tells it to,
// and records what Herald sent it. Herald nodes are real servers on loopback ports; hooks are real HTTP.

const KEY = 'proxy-test-api-key-0123456789'
const NodeWebSocket = WS as unknown as WebSocketConstructor
const NAMESPACES = {
  namespaces: { room: {}, user: {}, dm: {}, vip: { subscribeProxy: true }, mod: { publishProxy: true }, feed: {} },
  unknown: 'refuse' as const
}
/** The same without the hook-decided namespaces (a namespace that asks a hook with no URL stops the server). */
const PLAIN = { namespaces: { room: {}, user: {}, dm: {}, feed: {} }, unknown: 'refuse' as const }

type Hook = 'connect' | 'subscribe' | 'publish' | 'refresh'
interface Call { hook: Hook, body: any, headers: Record<string, unknown> }
type Answer = { status: number, body?: unknown, hang?: boolean, raw?: string }

/** The application: each hook answers through `answer` (default below), every call is recorded. */
async function backend (t: TestContext): Promise<{ url: string, calls: Call[], answer: Partial<Record<Hook, (body: any, req: FastifyRequest) => Answer>>, of: (hook: Hook) => Call[], release: () => void }> {
  const app = Fastify({ forceCloseConnections: true })
  const calls: Call[] = []
  const hung: FastifyReply[] = []
  const answer: Partial<Record<Hook, (body: any, req: FastifyRequest) => Answer>> = {}
  for (const hook of ['connect', 'subscribe', 'publish', 'refresh'] as const) {
    app.post('/' + hook, async (req, reply) => {
      calls.push({ hook, body: req.body, headers: req.headers })
      const a = answer[hook]?.(req.body, req) ?? { status: 200, body: {} }
      if (a.hang === true) { hung.push(reply); return await new Promise(() => {}) }
      reply.code(a.status)
      if (a.raw !== undefined) return await reply.type('application/json').send(a.raw)
      return await reply.send(a.body ?? {})
    })
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  const release = (): void => { for (const r of hung.splice(0)) r.raw.destroy() }
  t.after(async () => { release(); await app.close() })
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  return { url, calls, answer, of: (hook) => calls.filter((c) => c.hook === hook), release }
}

/** The connect hook of the tests: a session cookie names the user; anything else is refused the way it says. */
function cookieConnect (body: any): Answer {
  const cookie = String(body.headers.cookie ?? '')
  const user = /session=([a-z]+)-ok/.exec(cookie)?.[1]
  if (user !== undefined) return { status: 200, body: { sub: user, subscribe: ['room:*'], publish: ['room:*'], channels: [`user:${user}#${user}`], info: { name: user } } }
  if (cookie.includes('banned')) return { status: 403, body: { error: { code: 'banned', message: 'this account is banned' } } }
  if (cookie.includes('slow')) return { status: 200, hang: true }
  if (cookie.includes('broken')) return { status: 500, body: { oops: true } }
  if (cookie.includes('weird')) return { status: 200, raw: '{"sub": 42, "__proto__": {"admin": true}}' }
  if (cookie.includes('huge')) return { status: 200, body: { sub: 'x', info: 'x'.repeat(300_000) } }
  if (cookie.includes('notjson')) return { status: 200, raw: '<html>' }
  return { status: 401, body: { error: { code: 'no_session', message: 'log in first' } } }
}

async function setup (t: TestContext, opts: { nodes?: number, proxy?: Record<string, unknown> } = {}): Promise<{ app: Awaited<ReturnType<typeof backend>>, nodes: TestApp[] }> {
  const app = await backend(t)
  app.answer.connect = cookieConnect
  const redis = (opts.nodes ?? 1) > 1 ? await startRedis(t) : undefined
  const nodes: TestApp[] = []
  for (let i = 0; i < (opts.nodes ?? 1); i++) {
    nodes.push(await startHerald(t, {
      redisUrl: redis?.url,
      options: { nodeId: 'node-' + 'ab'[i] },
      config: {
        api: { keys: [KEY] },
        namespaces: NAMESPACES,
        proxy: { connectUrl: app.url + '/connect', subscribeUrl: app.url + '/subscribe', publishUrl: app.url + '/publish', refreshUrl: app.url + '/refresh', timeoutMs: 300, ...opts.proxy }
      }
    }))
  }
  return { app, nodes }
}

async function refusedWs (url: string, headers: Record<string, string>): Promise<{ status: number, body: any }> {
  try {
    const c = await WsClient.connect(url, { token: null, headers })
    c.close()
  } catch (err) {
    return err as { status: number, body: any }
  }
  throw new Error('the upgrade was not refused')
}

async function sseRefusal (base: string, channels: string[], headers: Record<string, string>): Promise<{ status: number, body: any }> {
  try {
    const s = await SseClient.open(base, channels, { token: null, headers })
    s.close()
  } catch (err) {
    return err as { status: number, body: any }
  }
  throw new Error('the stream was not refused')
}

const eventsOf = (frames: Frame[], channel: string): unknown[] => frames.filter((f) => f.type === 'event' && f.channel === channel).map((f) => f.data)

// ---------------------------------------------------------------- connect hook

test('connect hook: a session cookie admits WebSocket, SSE and long-poll without a token, with the permissions and channels the application names', { skip: redisSkipReason() }, async (t) => {
  const { app, nodes: [a, b] } = await setup(t, { nodes: 2 })
  const headers = { cookie: 'session=alice-ok; theme=dark', 'user-agent': 'proxy-test', 'x-internal-secret': 'never-forwarded' }

  const ws = await WsClient.connect(a.wsUrl, { token: null, headers })
  const hello = await ws.waitFor((f) => f.type === 'connected')
  assert.equal(hello.sub, 'alice')
  assert.deepEqual(hello.channels, ['user:alice#alice'])
  const made = await ws.waitFor((f) => f.type === 'subscribed' && f.channel === 'user:alice#alice')
  assert.equal(made.server, true, 'the server made it: the client did not ask')

  // Only PROXY_HEADERS reach the application; the transport and the client address come with them.
  const first = app.of('connect')[0]
  assert.equal(first.body.transport, 'websocket')
  assert.equal(first.body.ip, '127.0.0.1')
  assert.equal(first.body.headers.cookie, 'session=alice-ok; theme=dark')
  assert.equal(first.body.headers['user-agent'], 'proxy-test')
  assert.equal(first.body.headers['x-internal-secret'], undefined)
  assert.deepEqual(Object.keys(first.body.headers).sort(), ['cookie', 'user-agent'])

  // The permissions the hook gave hold: room:* yes, feed:* no.
  ws.send({ type: 'subscribe', channel: 'room:1', id: 's1' })
  await ws.waitFor((f) => f.type === 'ack' && f.id === 's1')
  ws.send({ type: 'subscribe', channel: 'feed:1', id: 's2' })
  assert.equal((await ws.waitFor((f) => f.type === 'error' && f.id === 's2')).code, 'HERALD_ERR_FORBIDDEN')

  // SSE and long-poll need no channel parameter: the hook's channels are the stream's. On the other node.
  const sse = await SseClient.open(b.url, [], { token: null, headers })
  await sse.waitFor((m) => m.data.type === 'subscribed' && m.data.channel === 'user:alice#alice' && m.data.server === true)
  const firstPoll = await poll(b.url, [], { token: null, headers, timeout: 0 })
  assert.equal(firstPoll.status, 200, JSON.stringify(firstPoll.body))
  assert.equal(firstPoll.body.subscribed?.[0]?.channel, 'user:alice#alice')
  const waiting = poll(b.url, [], { token: null, headers, cursor: firstPoll.body.cursor, timeout: 20 })

  const sent = await publish(a.url, 'user:alice#alice', { n: 1 })
  assert.equal(sent.status, 201)
  await ws.events('user:alice#alice', 1)
  await sse.waitEvents('user:alice#alice', 1)
  const answered = await waiting
  assert.deepEqual(answered.body.events.map((e: Frame) => e.data), [{ n: 1 }])
  assert.deepEqual(app.of('connect').map((c) => c.body.transport).sort(), ['long-poll', 'long-poll', 'sse', 'websocket'])
  ws.close()
  sse.close()
})

test('connect hook: refusals keep the application\'s status and words; a hook that hangs, fails or answers nonsense is a 503 to retry, never a crash', async (t) => {
  const { app, nodes: [h] } = await setup(t)
  const banned = await refusedWs(h.wsUrl, { cookie: 'banned' })
  assert.equal(banned.status, 403)
  assert.equal(banned.body.code, 'HERALD_ERR_PROXY_REFUSED')
  assert.deepEqual(banned.body.app, { code: 'banned', message: 'this account is banned' })
  const anonymous = await sseRefusal(h.url, ['room:1'], { cookie: 'nothing' })
  assert.equal(anonymous.status, 401)
  assert.deepEqual(anonymous.body.app, { code: 'no_session', message: 'log in first' })
  const polled = await poll(h.url, ['room:1'], { token: null, headers: { cookie: 'banned' } })
  assert.equal(polled.status, 403)
  assert.equal(polled.body.app.code, 'banned')

  for (const cookie of ['slow', 'broken', 'weird', 'huge', 'notjson']) {
    const ws = await refusedWs(h.wsUrl, { cookie })
    assert.equal(ws.status, 503, cookie)
    assert.equal(ws.body.code, 'HERALD_ERR_PROXY_UNAVAILABLE', cookie)
    const sse = await sseRefusal(h.url, ['room:1'], { cookie })
    assert.equal(sse.status, 503, cookie)
    const p = await poll(h.url, ['room:1'], { token: null, headers: { cookie } })
    assert.equal(p.status, 503, cookie)
  }
  // The prototype key in the "weird" answer polluted nothing; the node still serves.
  assert.equal(({} as Record<string, unknown>).admin, undefined)
  const ok = await WsClient.connect(h.wsUrl, { token: null, headers: { cookie: 'session=bob-ok' } })
  assert.equal((await ok.waitFor((f) => f.type === 'connected')).sub, 'bob')
  ok.close()
  // Cross-site: a browser would send the victim's cookie with any site's WebSocket. With CORS_ORIGINS `*` only a page
  // of this host is admitted by the hook; the application is never even asked about the others.
  const asked = app.of('connect').length
  const evil = await refusedWs(h.wsUrl, { cookie: 'session=bob-ok', origin: 'https://evil.example' })
  assert.equal(evil.status, 403)
  assert.equal(evil.body.code, 'HERALD_ERR_ORIGIN_NOT_ALLOWED')
  assert.equal((await sseRefusal(h.url, ['room:1'], { cookie: 'session=bob-ok', origin: 'null' })).status, 403)
  assert.equal((await poll(h.url, ['room:1'], { token: null, headers: { cookie: 'session=bob-ok', origin: 'http://127.0.0.1:1' } })).status, 403)
  assert.equal(app.of('connect').length, asked)
  const sameSite = await WsClient.connect(h.wsUrl, { token: null, headers: { cookie: 'session=bob-ok', origin: `http://127.0.0.1:${h.port}` } })
  assert.equal((await sameSite.waitFor((f) => f.type === 'connected')).sub, 'bob')
  sameSite.close()
  // A token still works as before, and never reaches the hook.
  const before = app.of('connect').length
  const withToken = await WsClient.connect(h.wsUrl, { token: token({ sub: 'tok' }) })
  assert.equal((await withToken.waitFor((f) => f.type === 'connected')).sub, 'tok')
  assert.equal(app.of('connect').length, before)
  withToken.close()
  const metrics = await (await fetch(h.url + '/metrics')).text()
  assert.match(metrics, /herald_proxy_requests_total\{hook="connect",result="timeout"\} [1-9]/)
  assert.match(metrics, /herald_proxy_requests_total\{hook="connect",result="refused"\} [1-9]/)
  assert.match(metrics, /herald_proxy_duration_seconds_count\{hook="connect"\} [1-9]/)
})

test('connect hook: at most PROXY_MAX_INFLIGHT calls under way; the rest are refused at once, not queued', async (t) => {
  const { app, nodes: [h] } = await setup(t, { proxy: { timeoutMs: 30_000, maxInflight: 2 } })
  const hanging = [refusedWs(h.wsUrl, { cookie: 'slow' }), refusedWs(h.wsUrl, { cookie: 'slow' })]
  await until(() => app.of('connect').length === 2, 'two hook calls under way')
  const third = await refusedWs(h.wsUrl, { cookie: 'session=carol-ok' })
  assert.equal(third.status, 503)
  assert.match(third.body.message, /PROXY_MAX_INFLIGHT/)
  assert.equal(app.of('connect').length, 2, 'the third never reached the application')
  // The application's hung answers break off: the two waiting are refused as unavailable, and the place is free again.
  app.release()
  for (const refused of await Promise.all(hanging)) assert.equal(refused.status, 503)
  const now = await WsClient.connect(h.wsUrl, { token: null, headers: { cookie: 'session=carol-ok' } })
  assert.equal((await now.waitFor((f) => f.type === 'connected')).sub, 'carol')
  now.close()
})

// ---------------------------------------------------------------- subscribe and publish hooks

test('subscribe hook: allows with data for the subscriber, refuses with the application\'s code; decided per subject on every transport', async (t) => {
  const { app, nodes: [h] } = await setup(t)
  app.answer.subscribe = (body) => body.channel === 'vip:lounge'
    ? { status: 200, body: { data: { welcome: `hi ${String(body.sub)}` } } }
    : { status: 403, body: { error: { code: 'not_member', message: 'members only' } } }
  // No pattern for vip:* in the token: in a subscribeProxy namespace the application decides.
  const tok = token({ sub: 'dana', subscribe: ['room:*'], info: { plan: 'gold' } })
  const ws = await WsClient.connect(h.wsUrl, { token: tok })
  ws.send({ type: 'subscribe', channel: 'vip:lounge', id: 'a' })
  const ok = await ws.waitFor((f) => f.type === 'subscribed' && f.channel === 'vip:lounge')
  assert.deepEqual(ok.data, { welcome: 'hi dana' })
  assert.deepEqual(app.of('subscribe')[0].body, { sub: 'dana', channel: 'vip:lounge', info: { plan: 'gold' }, transport: 'websocket' })
  ws.send({ type: 'subscribe', channel: 'vip:kitchen', id: 'b' })
  const no = await ws.waitFor((f) => f.type === 'error' && f.id === 'b')
  assert.equal(no.code, 'HERALD_ERR_PROXY_REFUSED')
  assert.deepEqual(no.app, { code: 'not_member', message: 'members only' })
  assert.equal(ws.frames.some((f) => f.type === 'subscribed' && f.channel === 'vip:kitchen'), false)

  // SSE: a refusal is the stream's HTTP answer; an admission carries the data.
  await assert.rejects(SseClient.open(h.url, ['vip:kitchen'], { token: tok }), (err: any) => err.status === 403 && err.body.app.code === 'not_member')
  const sse = await SseClient.open(h.url, ['vip:lounge'], { token: tok })
  assert.deepEqual((await sse.waitFor((m) => m.data.type === 'subscribed')).data.data, { welcome: 'hi dana' })
  sse.close()

  // Long-poll: two subjects at the same place each get asked about (a hook-decided session is never shared).
  const callsBefore = app.of('subscribe').length
  const p1 = await poll(h.url, ['vip:lounge'], { token: tok, timeout: 0 })
  const p2 = await poll(h.url, ['vip:lounge'], { token: token({ sub: 'eve', subscribe: [] }), timeout: 0 })
  assert.equal(p1.status, 200)
  assert.equal(p2.status, 200)
  assert.deepEqual(app.of('subscribe').slice(callsBefore).map((c) => c.body.sub).sort(), ['dana', 'eve'])
  const refused = await poll(h.url, ['vip:kitchen'], { token: tok, timeout: 0 })
  assert.equal(refused.status, 403)
  assert.equal(refused.body.app.code, 'not_member')
  // A hook that hangs: the subscribe fails as temporary, the connection lives on.
  app.answer.subscribe = () => ({ status: 200, hang: true })
  ws.send({ type: 'subscribe', channel: 'vip:lounge2', id: 'c' })
  assert.equal((await ws.waitFor((f) => f.type === 'error' && f.id === 'c')).code, 'HERALD_ERR_PROXY_UNAVAILABLE')
  ws.send({ type: 'ping', id: 'p' })
  await ws.waitFor((f) => f.type === 'pong' && f.id === 'p')
  ws.close()
})

test('publish hook: publishes as is, rewrites, or refuses with the application\'s code — subscribers on another node see the result', { skip: redisSkipReason() }, async (t) => {
  const { app, nodes: [a, b] } = await setup(t, { nodes: 2 })
  app.answer.publish = (body) => {
    const text = String(body.data?.text ?? '')
    if (text.includes('spam')) return { status: 422, body: { error: { code: 'spam', message: 'no ads please' } } }
    if (text.includes('darn')) return { status: 200, body: { data: { text: text.replace('darn', '****'), moderated: true } } }
    return { status: 200, body: {} }
  }
  // No publish pattern for mod:* in the token: the hook decides.
  const author = await WsClient.connect(a.wsUrl, { token: token({ sub: 'fay', publish: ['room:*'] }) })
  const reader = await WsClient.connect(b.wsUrl)
  await reader.subscribe('mod:chat')
  author.send({ type: 'publish', channel: 'mod:chat', data: { text: 'hello' }, id: 'p1' })
  author.send({ type: 'publish', channel: 'mod:chat', data: { text: 'oh darn' }, id: 'p2' })
  author.send({ type: 'publish', channel: 'mod:chat', data: { text: 'buy spam' }, id: 'p3' })
  const refusal = await author.waitFor((f) => f.type === 'error' && f.id === 'p3')
  assert.equal(refusal.code, 'HERALD_ERR_PROXY_REFUSED')
  assert.deepEqual(refusal.app, { code: 'spam', message: 'no ads please' })
  await author.waitFor((f) => f.type === 'ack' && f.id === 'p2')
  await reader.events('mod:chat', 2)
  assert.deepEqual(eventsOf(reader.frames, 'mod:chat'), [{ text: 'hello' }, { text: 'oh ****', moderated: true }])
  assert.deepEqual(app.of('publish')[0].body, { sub: 'fay', channel: 'mod:chat', data: { text: 'hello' } })
  // Backends publishing over REST are not asked (the hook is for clients).
  const before = app.of('publish').length
  assert.equal((await publish(a.url, 'mod:chat', { text: 'spam from the backend' })).status, 201)
  assert.equal(app.of('publish').length, before)
  // Outside publishProxy namespaces the token decides, as before.
  author.send({ type: 'publish', channel: 'feed:x', data: 1, id: 'p4' })
  assert.equal((await author.waitFor((f) => f.type === 'error' && f.id === 'p4')).code, 'HERALD_ERR_FORBIDDEN')
  author.close()
  reader.close()
})

test('refresh hook: a hook-admitted connection is extended before its exp, and closed (4501) once the application refuses', async (t) => {
  const { app, nodes: [h] } = await setup(t)
  const exp = (): number => Math.floor(Date.now() / 1000) + 3
  let firstExp = 0
  app.answer.connect = () => { firstExp = exp(); return { status: 200, body: { sub: 'gus', subscribe: ['room:*'], exp: firstExp } } }
  let loggedOut = false
  app.answer.refresh = (body) => {
    if (body.sub !== 'gus') return { status: 400 }
    return loggedOut ? { status: 403, body: { error: { code: 'logged_out' } } } : { status: 200, body: { exp: exp() } }
  }
  const ws = await WsClient.connect(h.wsUrl, { token: null, headers: { cookie: 'any' } })
  await ws.subscribe('room:r')
  // Extensions carry it past the first exp; it still gets events there.
  await until(() => app.of('refresh').length >= 2 && Date.now() / 1000 > firstExp, 'two refresh calls, past the first exp', 15_000)
  assert.equal(ws.closed, null)
  await publish(h.url, 'room:r', 'still here')
  await ws.events('room:r', 1)
  assert.deepEqual(app.of('refresh')[0].body, { sub: 'gus', transport: 'websocket' })
  // The user logs out in the application: the next refresh ends the connection.
  loggedOut = true
  const closed = await ws.waitClosed(15_000)
  assert.equal(closed.code, 4501)
})

// ---------------------------------------------------------------- server-made subscriptions and user-limited channels

test('token `channels`: subscribed by the server on every transport, resumed from the client\'s cursor, with no pattern needed', async (t) => {
  const h = await startHerald(t, { config: { namespaces: PLAIN, maxSubscriptions: 3 } })
  const tok = token({ sub: 'hal', subscribe: [], channels: ['user:hal', 'feed:news'] })
  const ws = await WsClient.connect(h.wsUrl, { token: tok })
  assert.deepEqual((await ws.waitFor((f) => f.type === 'connected')).channels, ['user:hal', 'feed:news'])
  for (const ch of ['user:hal', 'feed:news']) assert.equal((await ws.waitFor((f) => f.type === 'subscribed' && f.channel === ch)).server, true)
  await publish(h.url, 'feed:news', 1)
  const [first] = await ws.events('feed:news', 1)
  ws.close()
  await publish(h.url, 'feed:news', 2)
  await publish(h.url, 'feed:news', 3)
  // Back with a cursor of its position: resumed, nothing lost, nothing twice.
  const cursor = encodeCursorText([['feed:news', { offset: first.offset, epoch: first.epoch }]])
  const again = await WsClient.connect(h.wsUrl, { token: tok, cursor })
  const resumed = await again.waitFor((f) => f.type === 'subscribed' && f.channel === 'feed:news')
  assert.equal(resumed.recovered, true)
  assert.deepEqual((await again.events('feed:news', 2)).map((e) => e.data), [2, 3])
  await assert.rejects(WsClient.connect(h.wsUrl, { token: tok, cursor: 'c2.nonsense' }), (err: any) => err.status === 400 && err.body.code === 'HERALD_ERR_BAD_CURSOR')
  again.close()

  // SSE and long-poll with no channel parameter; asking for one more is fine up to MAX_SUBSCRIPTIONS (3).
  const sse = await SseClient.open(h.url, ['room:x'], { token: token({ sub: 'hal', channels: ['user:hal', 'feed:news'] }) })
  await sse.waitFor((m) => m.data.type === 'subscribed' && m.data.channel === 'feed:news' && m.data.server === true)
  sse.close()
  await assert.rejects(SseClient.open(h.url, ['room:x', 'room:y'], { token: token({ channels: ['user:hal', 'feed:news'] }) }), (err: any) => err.body.code === 'HERALD_ERR_TOO_MANY_SUBSCRIPTIONS')
  const p = await poll(h.url, [], { token: tok, timeout: 0 })
  assert.equal(p.status, 200)
  assert.deepEqual(p.body.subscribed.map((s: Frame) => s.channel).sort(), ['feed:news', 'user:hal'])
  const none = await poll(h.url, [], { token: token({ sub: 'nobody' }), timeout: 0 })
  assert.equal(none.status, 400)

  // Malformed claims are refused like any bad token.
  for (const channels of ['feed:news', [42], ['bad channel'], ['a{b}'], Array.from({ length: 300 }, (_, i) => 'feed:' + i)]) {
    await assert.rejects(WsClient.connect(h.wsUrl, { token: token({ channels }) }), (err: any) => err.status === 401, JSON.stringify(channels).slice(0, 40))
  }
})

test('user-limited channels: name#alice,bob admits only the subjects it lists, whatever the patterns; the grammar refuses lookalikes', async (t) => {
  const h = await startHerald(t, { config: { namespaces: PLAIN } })
  const alice = await WsClient.connect(h.wsUrl, { token: token({ sub: 'alice' }) })
  const carol = await WsClient.connect(h.wsUrl, { token: token({ sub: 'carol' }) }) // subscribe: ['*']
  await alice.subscribe('dm:7#alice,bob')
  carol.send({ type: 'subscribe', channel: 'dm:7#alice,bob', id: 'x' })
  assert.equal((await carol.waitFor((f) => f.type === 'error' && f.id === 'x')).code, 'HERALD_ERR_FORBIDDEN')
  await assert.rejects(SseClient.open(h.url, ['dm:7#alice,bob'], { token: token({ sub: 'carol' }) }), (err: any) => err.status === 403)
  assert.equal((await poll(h.url, ['dm:7#alice,bob'], { token: token({ sub: 'carol' }), timeout: 0 })).status, 403)
  assert.equal((await poll(h.url, ['dm:7#alice,bob'], { token: token({ sub: 'bob', subscribe: [] }), timeout: 0 })).status, 200)
  const hist = await fetch(`${h.url}/v1/channels/${encodeURIComponent('dm:7#alice,bob')}/events`, { headers: { authorization: 'Bearer ' + token({ sub: 'carol' }) } })
  assert.equal(hist.status, 403)
  // Publishing goes by the patterns (a backend with `*` may write to anyone's channel).
  assert.equal((await publish(h.url, 'dm:7#alice,bob', 'psst')).status, 201)
  assert.deepEqual((await alice.events('dm:7#alice,bob', 1)).map((e) => e.data), ['psst'])
  // A subject with a comma-free lookalike is not in the list.
  const alic = await WsClient.connect(h.wsUrl, { token: token({ sub: 'alic' }) })
  alic.send({ type: 'subscribe', channel: 'dm:7#alice,bob', id: 'y' })
  assert.equal((await alic.waitFor((f) => f.type === 'error' && f.id === 'y')).code, 'HERALD_ERR_FORBIDDEN')
  for (const bad of ['dm:7#', 'dm:7#a,,b', '#alice', 'dm,7#alice', 'dm:7#a#b', 'dm:7#a,', 'x'.repeat(120) + '#abcdefghij']) {
    alice.send({ type: 'subscribe', channel: bad, id: 'b' + bad.length })
    const err = await alice.waitFor((f) => f.type === 'error' && f.id === 'b' + bad.length)
    assert.equal(err.code, 'HERALD_ERR_BAD_CHANNEL', bad)
    alice.frames.length = 0
  }
  // Two long-poll keys that a comma join would confuse stay apart: a#x,y vs the pair a#x and y.
  const one = await poll(h.url, ['dm:1#alice,room:1'], { token: token({ sub: 'alice' }), timeout: 0 })
  assert.equal(one.status, 200)
  alice.close()
  carol.close()
  alic.close()
})

// ---------------------------------------------------------------- the client library

for (const transport of ['websocket', 'sse', 'long-poll'] as const) {
  test(`client library (${transport}): server-made subscriptions arrive as a \`subscribed\` event and resume across a reconnect with nothing lost or repeated`, async (t) => {
    const h = await startHerald(t, { config: { namespaces: PLAIN, api: { keys: [KEY] }, pollLingerSeconds: 0 } })
    const c = createClient({ url: h.url, token: token({ sub: 'ivy', subscribe: [], channels: ['user:ivy'] }), WebSocket: NodeWebSocket, transports: [transport], backoff: { min: 20, max: 200, factor: 2 } })
    t.after(() => c.close())
    const seen: HeraldEvent[] = []
    const made = await new Promise<Subscription>((resolve) => c.on('subscribed', (sub) => { sub.on('event', (e) => seen.push(e)); resolve(sub) }))
    assert.equal(made.channel, 'user:ivy')
    assert.equal(made.server, true)
    await until(() => made.state === 'subscribed', 'confirmed')
    for (let i = 1; i <= 3; i++) await publish(h.url, 'user:ivy', i)
    await until(() => seen.length === 3, 'three events')
    // Disconnected by the server with a code that says "come back"; events published meanwhile must still arrive.
    const states: string[] = []
    c.on('state', (s) => states.push(s.to))
    const kicked = await fetch(h.url + '/v1/api/disconnect', { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY }, body: JSON.stringify({ sub: 'ivy', code: 4000, reason: 'test' }) })
    assert.equal(kicked.status, 200)
    for (let i = 4; i <= 6; i++) await publish(h.url, 'user:ivy', i)
    await until(() => seen.length >= 6, 'the events published around the reconnect', 10_000)
    for (let i = 7; i <= 8; i++) await publish(h.url, 'user:ivy', i)
    await until(() => seen.length >= 8, 'events after the reconnect', 10_000)
    assert.deepEqual(seen.map((e) => e.data), [1, 2, 3, 4, 5, 6, 7, 8])
    if (transport !== 'long-poll') assert.ok(states.includes('reconnecting') || states.includes('connecting'), `${transport} reconnected: ${states.join(',')}`)
    c.close()
  })
}

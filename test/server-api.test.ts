import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { loadEnv } from '../src/config.js'
import { createClient } from '../client/index.js'
import WebSocket from 'ws'
import { pino } from 'pino'
import { MemoryBroker } from '../src/bus/broker-memory.js'
import { MemoryRevocations, RevocationList, type RevocationStore } from '../src/control/revocations.js'
import { RedisRevocations } from '../src/control/revocations-redis.js'
import { poll, publish, redisSkipReason, SseClient, startHerald, startRedis, token, until, WsClient, type Frame, type TestApp } from './helper.js'
import { clusterSkipReason, startRedisCluster } from './support/redis-cluster.js'

// The server API (docs/server-api.md): two Herald nodes on one private Redis, real clients on every transport, the
// API called on one node and felt on the other.

const skip = redisSkipReason()
const KEY = 'test-api-key-0123456789'
const OTHER_KEY = 'rotated-api-key-9876543210'
const NAMESPACES = { namespaces: { srv: {}, own: {}, bc: {}, ls: {}, hist: {}, kick: {} }, unknown: 'refuse' as const }

interface Answer { status: number, body: any }

async function api (base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = { 'x-api-key': KEY }): Promise<Answer> {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)
  })
  const text = await res.text()
  return { status: res.status, body: text === '' ? null : JSON.parse(text) }
}

async function nodes (t: TestContext, n = 2, extra: Record<string, unknown> = {}): Promise<{ nodes: TestApp[], redisUrl: string, start: (id: string) => Promise<TestApp> }> {
  const redis = await startRedis(t)
  const start = async (id: string): Promise<TestApp> => await startHerald(t, {
    redisUrl: redis.url,
    options: { nodeId: id },
    config: { api: { keys: [KEY, OTHER_KEY] }, namespaces: NAMESPACES, maxSubscriptions: 4, ...extra }
  })
  const started: TestApp[] = []
  for (let i = 0; i < n; i++) started.push(await start('node-' + 'abc'[i]))
  return { nodes: started, redisUrl: redis.url, start }
}

/** A long-poll that is waiting on `node` (the node counts it), for the next step to act on; `answer` is its answer. */
async function waitingPoll (node: TestApp, channels: string[], opts: { token: string, cursor?: string }): Promise<{ answer: Promise<Answer> }> {
  const before = node.app.herald.connections.count('long-poll')
  const answer = poll(node.url, channels, { ...opts, timeout: 25 })
  await until(() => node.app.herald.connections.count('long-poll') > before, 'the long-poll waits on the node')
  return { answer }
}

/** A cursor at the top of `channels`, so that a first poll waits rather than answers at once. */
async function firstCursor (node: TestApp, channels: string[], tok: string): Promise<string> {
  const first = await poll(node.url, channels, { token: tok, timeout: 0 })
  assert.equal(first.status, 200, JSON.stringify(first.body))
  return first.body.cursor
}

const events = (frames: Frame[], channel: string): Frame[] => frames.filter((f) => f.type === 'event' && f.channel === channel)

test('disconnect closes every connection of a subject on the other node, on every transport, with a code that says not to come back', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t)
  const alice = token({ sub: 'alice', subscribe: ['kick:*'] })
  const ws = await WsClient.connect(b.wsUrl, { token: alice })
  t.after(() => ws.close())
  const sse = await SseClient.open(b.url, ['kick:1'], { token: alice })
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')
  const waiting = await waitingPoll(b, ['kick:1'], { token: alice, cursor: await firstCursor(b, ['kick:1'], alice) })
  // Someone else on the same node and channel stays.
  const bob = await WsClient.connect(b.wsUrl, { token: token({ sub: 'bob' }) })
  t.after(() => bob.close())
  await bob.subscribe('kick:1')

  const res = await api(a.url, 'POST', '/v1/api/disconnect', { sub: 'alice' })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  assert.deepEqual([res.body.expected, res.body.answered, res.body.closed], [2, 2, 3])
  // 1. WebSocket: the close code of the API's default, terminal for clients.
  assert.deepEqual(await ws.waitClosed(), { code: 4504, reason: 'disconnected by the server' })
  // 2. SSE: its disconnect message, then the end of the stream.
  const last = await sse.waitFor((m) => m.data.type === 'disconnect')
  assert.deepEqual([last.data.code, last.data.reconnect], [4504, false])
  await until(() => sse.ended, 'the SSE stream ends')
  // 3. The waiting long-poll is answered with it, and its session is gone.
  const answered = await waiting.answer
  assert.equal(answered.status, 200)
  assert.deepEqual(answered.body.disconnect, { code: 4504, reason: 'disconnected by the server', reconnect: false })
  assert.equal(b.app.herald.connections.countOf('alice'), 0)
  // Bob was not touched: his socket still answers, and still gets the channel's events.
  await publish(a.url, 'kick:1', { after: true })
  await bob.events('kick:1', 1)
  assert.equal(bob.closed, null)
})

test('disconnect of one client id, with a code and reason of the backend\'s', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t)
  const carol = token({ sub: 'carol' })
  const one = await WsClient.connect(b.wsUrl, { token: carol })
  t.after(() => one.close())
  const two = await WsClient.connect(a.wsUrl, { token: carol })
  t.after(() => two.close())
  const { client } = await one.waitFor((f) => f.type === 'connected')
  const res = await api(a.url, 'POST', '/v1/api/disconnect', { sub: 'carol', client, code: 4100, reason: 'move along ✓' })
  assert.equal(res.body.closed, 1, JSON.stringify(res.body))
  assert.deepEqual(await one.waitClosed(), { code: 4100, reason: 'move along ✓' })
  two.send({ type: 'ping', id: 'still-here' })
  await two.waitFor((f) => f.type === 'pong' && f.id === 'still-here')
})

test('the client library stops for the default disconnect code on every transport (and for a revoked token)', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t)
  for (const transport of ['websocket', 'sse', 'long-poll'] as const) {
    for (const [op, error] of [['disconnect', 'HERALD_CLOSE_4504'], ['revoke', 'HERALD_ERR_TOKEN_REVOKED']]) {
      const sub = `lib-${op}-${transport}`
      const client = createClient({ url: b.url, token: token({ sub, subscribe: ['kick:*'], iat: Math.floor(Date.now() / 1000) - 5 }), transports: [transport], WebSocket: WebSocket as never, pollTimeout: 20 })
      t.after(() => client.close())
      const failures: string[] = []
      client.on('error', (err) => { failures.push(err.code) })
      const subscription = client.subscribe('kick:lib')
      // A long-poll client is a connection while its poll waits: once subscribed (the first, immediate poll answered),
      // the poll that waits is the long one, so the API call cannot fall between two polls.
      await until(() => subscription.state === 'subscribed' && b.app.herald.connections.countOf(sub) === 1, 'the client is connected')
      const res = await api(a.url, 'POST', '/v1/api/' + op, { sub })
      assert.equal(res.body.closed, 1, `${op} ${transport}: ${JSON.stringify(res.body)}`)
      await until(() => client.state === 'closed', `${op} ${transport}: the client closes for good rather than reconnect`)
      assert.deepEqual(failures, [error], `${op} ${transport}`)
      assert.equal(b.app.herald.connections.countOf(sub), 0, `${op} ${transport}: it did not come back`)
    }
  }
})

test('subscribe and unsubscribe reach the live connections of a subject on the other node, on every transport', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t)
  // Alice's token allows own:* only: a server subscription needs no pattern.
  const alice = token({ sub: 'alice', subscribe: ['own:*'] })
  const ws = await WsClient.connect(b.wsUrl, { token: alice })
  t.after(() => ws.close())
  await ws.subscribe('own:x')
  const sse = await SseClient.open(b.url, ['own:x'], { token: alice })
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')
  let cursor = await firstCursor(b, ['own:x'], alice)
  let waiting = await waitingPoll(b, ['own:x'], { token: alice, cursor })
  const earlier = await api(a.url, 'POST', '/v1/api/broadcast', { channels: ['srv:news'], data: { n: 0 } })
  const epoch = earlier.body.results[0].epoch

  // 1. Subscribe: every connection, whatever the transport, from `since` (so the earlier event is replayed).
  const res = await api(a.url, 'POST', '/v1/api/subscribe', { sub: 'alice', channel: 'srv:news', since: { offset: 0, epoch } })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  assert.deepEqual([res.body.expected, res.body.answered, res.body.connections, res.body.subscribed, res.body.already], [2, 2, 3, 3, 0])
  const subscribed = await ws.waitFor((f) => f.type === 'subscribed' && f.channel === 'srv:news')
  assert.deepEqual([subscribed.server, subscribed.recovered, subscribed.replayed], [true, true, 1])
  await sse.waitFor((m) => m.data.type === 'subscribed' && m.data.channel === 'srv:news' && m.data.server === true)
  let answer = await waiting.answer
  assert.equal(answer.body.subscribed?.[0]?.channel, 'srv:news', JSON.stringify(answer.body))
  assert.equal(answer.body.subscribed[0].server, true)
  // A second call finds them subscribed.
  const again = await api(a.url, 'POST', '/v1/api/subscribe', { sub: 'alice', channel: 'srv:news' })
  assert.deepEqual([again.body.subscribed, again.body.already], [0, 3])

  // 2. Its events reach every transport: the replayed one, then a live one.
  await api(a.url, 'POST', '/v1/api/broadcast', { channels: ['srv:news'], data: { n: 1 } })
  assert.deepEqual((await ws.events('srv:news', 2)).map((e) => e.data.n), [0, 1])
  assert.deepEqual((await sse.waitEvents('srv:news', 2)).map((e) => e.data.n), [0, 1])
  // The long-poll session keeps it while its client polls it with its own channels, from the answer's cursor.
  const gathered: Frame[] = [...answer.body.events]
  cursor = answer.body.cursor
  for (let polls = 0; events(gathered, 'srv:news').length < 2; polls++) {
    assert.ok(polls < 10, 'the long-poll gets both events within ten polls: ' + JSON.stringify(gathered))
    answer = await poll(b.url, ['own:x'], { token: alice, cursor, timeout: 10 })
    assert.equal(answer.status, 200, JSON.stringify(answer.body))
    gathered.push(...answer.body.events)
    cursor = answer.body.cursor
  }
  assert.deepEqual(events(gathered, 'srv:news').map((e) => e.data.n), [0, 1])

  // 3. Unsubscribe: each is told (reason "server"), and no event of the channel follows.
  waiting = await waitingPoll(b, ['own:x'], { token: alice, cursor })
  const un = await api(a.url, 'POST', '/v1/api/unsubscribe', { sub: 'alice', channel: 'srv:news' })
  assert.deepEqual([un.body.connections, un.body.unsubscribed], [3, 3], JSON.stringify(un.body))
  assert.equal((await ws.waitFor((f) => f.type === 'unsubscribed' && f.channel === 'srv:news')).reason, 'server')
  await sse.waitFor((m) => m.data.type === 'unsubscribed' && m.data.channel === 'srv:news' && m.data.reason === 'server')
  answer = await waiting.answer
  assert.deepEqual(answer.body.unsubscribed, [{ channel: 'srv:news', reason: 'server' }])
  cursor = answer.body.cursor
  await api(a.url, 'POST', '/v1/api/broadcast', { channels: ['srv:news'], data: { n: 2 } })
  // A sentinel on the channel they keep, published after: once it is there, the other would have been too.
  await publish(a.url, 'own:x', { sentinel: true })
  await ws.events('own:x', 1)
  await sse.waitEvents('own:x', 1)
  const after = await poll(b.url, ['own:x'], { token: alice, cursor, timeout: 10 })
  assert.deepEqual(after.body.events.map((e: Frame) => e.channel), ['own:x'])
  assert.equal(events(ws.frames, 'srv:news').length, 2)
  assert.equal(sse.events('srv:news').length, 2)
})

test('a long-poll session shared by two subjects at one place: the server API acts on its own subject only', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t)
  const alice = token({ sub: 'alice', subscribe: ['own:*'] })
  const bob = token({ sub: 'bob', subscribe: ['own:*'] })
  const pollSessions = async (): Promise<number> => (await api(a.url, 'GET', '/v1/api/nodes')).body.nodes.find((n: any) => n.node === 'node-b').pollSessions
  // 1. Alice's session, Bob's poll joins it (same channels, same place).
  const start = await firstCursor(b, ['own:s'], alice)
  const aliceWaits = await waitingPoll(b, ['own:s'], { token: alice, cursor: start })
  const bobWaits = await waitingPoll(b, ['own:s'], { token: bob, cursor: start })
  assert.equal(await pollSessions(), 1)
  // A subscription of Alice's own: Bob's poll is answered without it, and his next poll goes to a session of his.
  const res = await api(a.url, 'POST', '/v1/api/subscribe', { sub: 'alice', channel: 'srv:p' })
  assert.deepEqual([res.body.connections, res.body.subscribed], [1, 1], JSON.stringify(res.body))
  const bobAnswer = (await bobWaits.answer).body
  assert.deepEqual([bobAnswer.events, bobAnswer.subscribed, bobAnswer.disconnect], [[], undefined, undefined])
  const aliceAnswer = (await aliceWaits.answer).body
  assert.equal(aliceAnswer.subscribed[0].channel, 'srv:p')
  const bobNext = await waitingPoll(b, ['own:s'], { token: bob, cursor: bobAnswer.cursor })
  const aliceNext = await waitingPoll(b, ['own:s'], { token: alice, cursor: aliceAnswer.cursor })
  assert.equal(await pollSessions(), 2)
  await api(a.url, 'POST', '/v1/api/broadcast', { channels: ['srv:p'], data: 'for alice' })
  assert.deepEqual((await aliceNext.answer).body.events.map((e: Frame) => e.data), ['for alice'])
  // 2. Bob's session, Alice's poll joins it: disconnecting Alice answers her poll alone.
  const aliceJoins = await waitingPoll(b, ['own:s'], { token: alice, cursor: bobAnswer.cursor })
  const off = await api(a.url, 'POST', '/v1/api/disconnect', { sub: 'alice' })
  assert.equal(off.body.closed, 1, JSON.stringify(off.body))
  assert.equal((await aliceJoins.answer).body.disconnect.code, 4504)
  assert.equal(b.app.herald.connections.countOf('bob'), 1, 'Bob\'s poll still waits')
  await publish(a.url, 'own:s', 'for bob')
  const bobGets = (await bobNext.answer).body
  assert.deepEqual([bobGets.events.map((e: Frame) => e.data), bobGets.disconnect], [['for bob'], undefined])
})

test('subscribe respects MAX_SUBSCRIPTIONS per connection and the namespaces', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t)
  const dave = token({ sub: 'dave', subscribe: ['own:*'] })
  const full = await WsClient.connect(b.wsUrl, { token: dave })
  t.after(() => full.close())
  for (const ch of ['own:1', 'own:2', 'own:3', 'own:4']) await full.subscribe(ch)
  const roomy = await WsClient.connect(b.wsUrl, { token: dave })
  t.after(() => roomy.close())
  const res = await api(a.url, 'POST', '/v1/api/subscribe', { sub: 'dave', channel: 'srv:more' })
  assert.deepEqual([res.body.connections, res.body.subscribed], [2, 1], JSON.stringify(res.body))
  const { client } = full.frames.find((f) => f.type === 'connected')!
  assert.deepEqual(res.body.errors, [{ node: 'node-b', client, code: 'HERALD_ERR_TOO_MANY_SUBSCRIPTIONS', message: 'At most 4 subscriptions per connection' }])
  const refused = await api(a.url, 'POST', '/v1/api/subscribe', { sub: 'dave', channel: 'nowhere:1' })
  assert.deepEqual([refused.status, refused.body.code], [404, 'HERALD_ERR_UNKNOWN_NAMESPACE'])
  // Nobody there: an answer, not an error.
  const nobody = await api(a.url, 'POST', '/v1/api/subscribe', { sub: 'nobody', channel: 'srv:more' })
  assert.deepEqual([nobody.status, nobody.body.connections, nobody.body.subscribed], [200, 0, 0])
})

test('revoke closes live connections and refuses the token on every route, on every node, nodes started later included', { skip }, async (t) => {
  const { nodes: [a, b], start } = await nodes(t)
  const issued = Math.floor(Date.now() / 1000) - 5
  const old = token({ sub: 'mallory', subscribe: ['kick:*'], iat: issued })
  const ws = await WsClient.connect(b.wsUrl, { token: old })
  t.after(() => ws.close())
  const sse = await SseClient.open(b.url, ['kick:2'], { token: old })
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')
  const waiting = await waitingPoll(b, ['kick:2'], { token: old, cursor: await firstCursor(b, ['kick:2'], old) })
  const bob = await WsClient.connect(b.wsUrl, { token: token({ sub: 'bob' }) })
  t.after(() => bob.close())

  const res = await api(a.url, 'POST', '/v1/api/revoke', { sub: 'mallory' })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  assert.deepEqual([res.body.expected, res.body.answered, res.body.closed], [2, 2, 3])
  const { before, until: end } = res.body.revoked
  assert.ok(before > issued && end >= before + 86400 - 1, JSON.stringify(res.body.revoked))
  assert.deepEqual(await ws.waitClosed(), { code: 4505, reason: 'token revoked' })
  assert.deepEqual((await sse.waitFor((m) => m.data.type === 'disconnect')).data.code, 4505)
  assert.equal((await waiting.answer).body.disconnect?.code, 4505)

  const later = await start('node-late')
  for (const node of [a, b, later]) {
    const refused = await refusedEverywhere(node, old)
    assert.deepEqual(refused, Array(6).fill('401 HERALD_ERR_TOKEN_REVOKED'), node.url)
  }
  // A token minted from the cutoff on is Mallory's new start; Bob never noticed.
  const fresh = token({ sub: 'mallory', iat: before })
  assert.equal((await publish(later.url, 'kick:2', { ok: 1 }, { token: fresh })).status, 201)
  const again = await WsClient.connect(b.wsUrl, { token: fresh })
  again.close()
  assert.equal(bob.closed, null)
})

/** Tries a token on every route that takes one: publish, history, whoami, WebSocket, SSE, long-poll. */
async function refusedEverywhere (node: TestApp, tok: string): Promise<string[]> {
  const out: string[] = []
  const say = (status: number, body: any): void => { out.push(`${status} ${String(body?.code)}`) }
  const pub = await publish(node.url, 'kick:2', { x: 1 }, { token: tok })
  say(pub.status, pub.body)
  for (const path of ['/v1/channels/kick:2/events', '/v1/whoami']) {
    const res = await fetch(node.url + path, { headers: { authorization: 'Bearer ' + tok } })
    say(res.status, await res.json())
  }
  try {
    const ws = await WsClient.connect(node.wsUrl, { token: tok })
    ws.close()
    out.push('upgraded')
  } catch (err) {
    const e = err as { status: number, body: any }
    say(e.status, e.body)
  }
  try {
    const sse = await SseClient.open(node.url, ['kick:2'], { token: tok })
    sse.close()
    out.push('streamed')
  } catch (err) {
    const e = err as { status: number, body: any }
    say(e.status, e.body)
  }
  const polled = await poll(node.url, ['kick:2'], { token: tok, timeout: 0 })
  say(polled.status, polled.body)
  return out
}

test('revoke by token id closes only that token\'s connections; revocations are bounded', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t, 2, { api: { keys: [KEY], revokeMax: 3 } })
  const leaked = token({ sub: 'erin', jti: 'leak-1' })
  const kept = token({ sub: 'erin', jti: 'other' })
  const bad = await WsClient.connect(b.wsUrl, { token: leaked })
  t.after(() => bad.close())
  const good = await WsClient.connect(b.wsUrl, { token: kept })
  t.after(() => good.close())
  const until = Math.floor(Date.now() / 1000) + 600
  const res = await api(a.url, 'POST', '/v1/api/revoke', { jti: 'leak-1', until })
  assert.deepEqual([res.status, res.body.closed, res.body.revoked], [200, 1, { jti: 'leak-1', until }], JSON.stringify(res.body))
  assert.equal((await bad.waitClosed()).code, 4505)
  good.send({ type: 'ping', id: 'p' })
  await good.waitFor((f) => f.type === 'pong')
  assert.equal((await publish(b.url, 'kick:3', 1, { token: leaked })).body.code, 'HERALD_ERR_TOKEN_REVOKED')
  assert.equal((await publish(b.url, 'kick:3', 1, { token: kept })).status, 201)
  // REVOKE_MAX=3: two more fit, a fourth is refused, renewing one in force is not a new one.
  for (const jti of ['leak-2', 'leak-3']) assert.equal((await api(b.url, 'POST', '/v1/api/revoke', { jti })).status, 200)
  const full = await api(a.url, 'POST', '/v1/api/revoke', { sub: 'frank' })
  assert.deepEqual([full.status, full.body.code], [429, 'HERALD_ERR_TOO_MANY_REVOCATIONS'])
  assert.equal((await api(a.url, 'POST', '/v1/api/revoke', { jti: 'leak-2' })).status, 200)
})

test('broadcast: an offset per channel, idempotent by id, errors per channel', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t)
  const ws = await WsClient.connect(b.wsUrl)
  t.after(() => ws.close())
  await ws.subscribe('bc:1')
  await publish(a.url, 'bc:2', { before: true })
  const first = await api(a.url, 'POST', '/v1/api/broadcast', { channels: ['bc:1', 'bc:2', 'nowhere:3'], data: { hi: 1 }, event: 'greeting', id: 'op-1' })
  assert.equal(first.status, 200, JSON.stringify(first.body))
  const [one, two, three] = first.body.results
  assert.deepEqual([one.channel, one.offset, one.duplicate, two.channel, two.offset], ['bc:1', 1, false, 'bc:2', 2])
  assert.deepEqual(three, { channel: 'nowhere:3', error: { code: 'HERALD_ERR_UNKNOWN_NAMESPACE', message: 'Namespace of channel nowhere:3 is not configured' } })
  const event = (await ws.events('bc:1', 1))[0]
  assert.deepEqual([event.event, event.data, event.offset, event.epoch], ['greeting', { hi: 1 }, 1, one.epoch])
  // A retry (on another node) is the same publish; the same id with other data is a conflict, per channel.
  const retry = await api(b.url, 'POST', '/v1/api/broadcast', { channels: ['bc:1', 'bc:2'], data: { hi: 1 }, event: 'greeting', id: 'op-1' })
  assert.deepEqual(retry.body.results.map((r: any) => [r.offset, r.duplicate]), [[1, true], [2, true]])
  const conflict = await api(a.url, 'POST', '/v1/api/broadcast', { channels: ['bc:1'], data: { hi: 2 }, id: 'op-1' })
  assert.equal(conflict.body.results[0].error.code, 'HERALD_ERR_IDEMPOTENCY_CONFLICT')
  const next = await api(a.url, 'POST', '/v1/api/broadcast', { channels: ['bc:1'], data: { hi: 3 } })
  assert.equal(next.body.results[0].offset, 2)
  assert.deepEqual((await ws.events('bc:1', 2)).map((e) => e.offset), [1, 2])
})

test('channels and nodes list every node; DELETE removes history and keeps the position', { skip }, async (t) => {
  const { nodes: [a, b] } = await nodes(t)
  const wa = await WsClient.connect(a.wsUrl)
  t.after(() => wa.close())
  await wa.subscribe('ls:a')
  const wb = await WsClient.connect(b.wsUrl)
  t.after(() => wb.close())
  await wb.subscribe('ls:a')
  await wb.subscribe('ls:b')
  await wb.subscribe('own:z')
  const sse = await SseClient.open(b.url, ['ls:b'])
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')

  const channels = await api(b.url, 'GET', '/v1/api/channels?pattern=ls:*')
  assert.equal(channels.status, 200, JSON.stringify(channels.body))
  assert.deepEqual(channels.body, { expected: 2, answered: 2, channels: [{ channel: 'ls:a', subscribers: 2 }, { channel: 'ls:b', subscribers: 2 }], truncated: false })
  const limited = await api(a.url, 'GET', '/v1/api/channels?limit=1')
  assert.equal(limited.body.truncated, true)

  const listed = await api(a.url, 'GET', '/v1/api/nodes')
  assert.equal(listed.status, 200, JSON.stringify(listed.body))
  assert.deepEqual(listed.body.nodes.map((n: any) => [n.node, n.connections.websocket, n.connections.sse, n.subscriptions, n.bus]), [['node-a', 1, 0, 1, 'redis'], ['node-b', 1, 1, 4, 'redis']])
  for (const n of listed.body.nodes) {
    assert.equal(n.version, '0.1.0')
    assert.ok(Number.isInteger(n.uptime) && n.uptime >= 0)
    assert.ok(typeof n.deliveriesPerSecond === 'number' && n.deliveriesPerSecond >= 0)
  }

  for (let i = 1; i <= 3; i++) await publish(a.url, 'hist:x', { i })
  const userToken = await api(a.url, 'DELETE', '/v1/channels/hist:x/events', undefined, { authorization: 'Bearer ' + token() })
  assert.deepEqual([userToken.status, userToken.body.code], [401, 'HERALD_ERR_BAD_API_KEY'])
  const removed = await api(b.url, 'DELETE', '/v1/channels/hist:x/events')
  assert.equal(removed.status, 200, JSON.stringify(removed.body))
  assert.equal(removed.body.offset, 3)
  const history = await fetch(`${a.url}/v1/channels/hist:x/events?since=1`, { headers: { authorization: 'Bearer ' + token() } }).then(async (r) => await r.json() as any)
  assert.deepEqual([history.events, history.offset, history.truncated, history.epoch], [[], 3, true, removed.body.epoch])
  assert.equal((await publish(a.url, 'hist:x', { i: 4 })).body.offset, 4)
})

/** Disconnect, revoke and the node list across `a` and `b` (the API called on `a`, the connections on `b`). */
async function acrossNodes (t: TestContext, a: TestApp, b: TestApp, expected: number, late?: () => Promise<TestApp>): Promise<void> {
  const gina = token({ sub: 'gina', iat: Math.floor(Date.now() / 1000) - 5 })
  const ws = await WsClient.connect(b.wsUrl, { token: gina })
  t.after(() => ws.close())
  const sse = await SseClient.open(b.url, ['kick:9'], { token: gina })
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')
  const listed = await api(a.url, 'GET', '/v1/api/nodes')
  assert.deepEqual([listed.body.expected, listed.body.answered, listed.body.nodes.length], [expected, expected, expected], JSON.stringify(listed.body))
  const sub = await api(a.url, 'POST', '/v1/api/subscribe', { sub: 'gina', channel: 'srv:9' })
  assert.deepEqual([sub.body.connections, sub.body.subscribed], [2, 2], JSON.stringify(sub.body))
  await ws.waitFor((f) => f.type === 'subscribed' && f.channel === 'srv:9' && f.server === true)
  const revoked = await api(a.url, 'POST', '/v1/api/revoke', { sub: 'gina' })
  assert.deepEqual([revoked.status, revoked.body.closed], [200, 2], JSON.stringify(revoked.body))
  assert.equal((await ws.waitClosed()).code, 4505)
  assert.equal((await sse.waitFor((m) => m.data.type === 'disconnect')).data.code, 4505)
  for (const node of [a, b, ...(late === undefined ? [] : [await late()])]) {
    assert.equal((await publish(node.url, 'kick:9', 1, { token: gina })).body.code, 'HERALD_ERR_TOKEN_REVOKED', node.url)
  }
}

test('the in-process bus: nodes sharing it reach each other\'s connections through its control channel', async (t) => {
  const broker = new MemoryBroker({ history: { size: 100, ttlSeconds: 60, metaTtlSeconds: 0 }, idempotencyTtlSeconds: 60 })
  await broker.connect()
  t.after(async () => { await broker.close() })
  const start = async (id: string): Promise<TestApp> => await startHerald(t, { config: { api: { keys: [KEY] }, namespaces: NAMESPACES }, options: { nodeId: id, broker } })
  const [a, b] = [await start('mem-a'), await start('mem-b')]
  await acrossNodes(t, a, b, 2, async () => await start('mem-late'))
})

test('a Redis Cluster: the control channel is one sharded channel, revocations live in one slot', { skip: clusterSkipReason() }, async (t) => {
  const cluster = await startRedisCluster(t, { primaries: 3, replicasPerPrimary: 0 })
  const start = async (id: string): Promise<TestApp> => await startHerald(t, {
    config: { redisCluster: cluster.seeds.split(','), api: { keys: [KEY] }, namespaces: NAMESPACES },
    options: { nodeId: id }
  })
  const [a, b] = [await start('cl-a'), await start('cl-b')]
  await acrossNodes(t, a, b, 2, async () => await start('cl-late'))
  const shard = cluster.slotOf('herald-test:!control')
  const owner = await cluster.masterOf(shard)
  assert.deepEqual(cluster.cli(owner.port, 'PUBSUB', 'SHARDCHANNELS', 'herald-test:!control').trim(), 'herald-test:!control')
})

test('attacks on the server API: each a 4xx with a code, never a crash', async (t) => {
  const node = await startHerald(t, { config: { api: { keys: [KEY] }, maxBodyBytes: 65536 } })
  const bad: Array<[string, Answer, number, string]> = []
  const expect = (what: string, res: Answer, status: number, code: string): void => { bad.push([what, res, status, code]) }
  const body = { sub: 'x' }
  expect('no key', await api(node.url, 'POST', '/v1/api/disconnect', body, {}), 401, 'HERALD_ERR_BAD_API_KEY')
  expect('wrong key', await api(node.url, 'POST', '/v1/api/disconnect', body, { 'x-api-key': KEY + 'x' }), 401, 'HERALD_ERR_BAD_API_KEY')
  expect('short key', await api(node.url, 'POST', '/v1/api/disconnect', body, { 'x-api-key': 'short' }), 401, 'HERALD_ERR_BAD_API_KEY')
  expect('a user token as key', await api(node.url, 'POST', '/v1/api/disconnect', body, { 'x-api-key': token() }), 401, 'HERALD_ERR_BAD_API_KEY')
  expect('a user token as bearer', await api(node.url, 'GET', '/v1/api/nodes', undefined, { authorization: 'Bearer ' + token() }), 401, 'HERALD_ERR_BAD_API_KEY')
  expect('__proto__', await api(node.url, 'POST', '/v1/api/disconnect', '{"sub":"x","__proto__":{"polluted":true}}'), 400, 'HERALD_ERR_MALFORMED_JSON')
  expect('constructor.prototype', await api(node.url, 'POST', '/v1/api/broadcast', '{"channels":["bc:1"],"data":{"constructor":{"prototype":{"polluted":true}}}}'), 400, 'HERALD_ERR_MALFORMED_JSON')
  expect('too many channels', await api(node.url, 'POST', '/v1/api/broadcast', { channels: Array.from({ length: 1001 }, (_, i) => 'bc:' + i), data: 1 }), 400, 'HERALD_ERR_VALIDATION')
  expect('repeated channels', await api(node.url, 'POST', '/v1/api/broadcast', { channels: ['bc:1', 'bc:1'], data: 1 }), 400, 'HERALD_ERR_VALIDATION')
  expect('a body over MAX_BODY_BYTES', await api(node.url, 'POST', '/v1/api/broadcast', { channels: Array.from({ length: 1000 }, (_, i) => 'bc:' + 'x'.repeat(100) + i), data: 1 }), 413, 'HERALD_ERR_BODY_TOO_LARGE')
  expect('deeply nested data', await api(node.url, 'POST', '/v1/api/broadcast', '{"channels":["bc:1"],"data":' + '['.repeat(5000) + ']'.repeat(5000) + '}'), 400, 'HERALD_ERR_VALIDATION')
  expect('an unknown field', await api(node.url, 'POST', '/v1/api/subscribe', { sub: 'x', channel: 'bc:1', admin: true }), 400, 'HERALD_ERR_VALIDATION')
  expect('an unknown nested field', await api(node.url, 'POST', '/v1/api/subscribe', { sub: 'x', channel: 'bc:1', since: { offset: 1, epoch: 'e', extra: 1 } }), 400, 'HERALD_ERR_VALIDATION')
  expect('a bad channel', await api(node.url, 'POST', '/v1/api/subscribe', { sub: 'x', channel: 'no spaces' }), 400, 'HERALD_ERR_BAD_CHANNEL')
  expect('a standard close code', await api(node.url, 'POST', '/v1/api/disconnect', { sub: 'x', code: 1000 }), 400, 'HERALD_ERR_VALIDATION')
  expect('a reason over 123 bytes', await api(node.url, 'POST', '/v1/api/disconnect', { sub: 'x', reason: '✓'.repeat(42) }), 400, 'HERALD_ERR_VALIDATION')
  expect('no sub', await api(node.url, 'POST', '/v1/api/disconnect', {}), 400, 'HERALD_ERR_VALIDATION')
  expect('revoke sub and jti', await api(node.url, 'POST', '/v1/api/revoke', { sub: 'x', jti: 'y' }), 400, 'HERALD_ERR_VALIDATION')
  expect('revoke nothing', await api(node.url, 'POST', '/v1/api/revoke', {}), 400, 'HERALD_ERR_VALIDATION')
  expect('revoke until the past', await api(node.url, 'POST', '/v1/api/revoke', { sub: 'x', until: 1 }), 400, 'HERALD_ERR_VALIDATION')
  expect('a bad pattern', await api(node.url, 'GET', '/v1/api/channels?pattern=' + encodeURIComponent('a b')), 400, 'HERALD_ERR_VALIDATION')
  expect('not JSON', await api(node.url, 'POST', '/v1/api/revoke', '{"sub":'), 400, 'HERALD_ERR_MALFORMED_JSON')
  expect('a form body', await api(node.url, 'POST', '/v1/api/revoke', 'sub=x', { 'x-api-key': KEY, 'content-type': 'application/x-www-form-urlencoded' }), 415, 'HERALD_ERR_UNSUPPORTED_MEDIA_TYPE')
  for (const [what, res, status, code] of bad) assert.deepEqual([res.status, res.body?.code], [status, code], `${what}: ${JSON.stringify(res.body)}`)
  assert.equal(({} as Record<string, unknown>).polluted, undefined)
  assert.equal((await fetch(node.url + '/healthz')).status, 200)
})

test('without API_KEYS the server API answers 403 HERALD_ERR_API_DISABLED; failed keys lock the address out; keys rotate', async (t) => {
  const off = await startHerald(t)
  for (const [method, path] of [['POST', '/v1/api/broadcast'], ['GET', '/v1/api/nodes'], ['DELETE', '/v1/channels/a/events']]) {
    const res = await api(off.url, method, path, method === 'POST' ? { channels: ['a'], data: 1 } : undefined)
    assert.deepEqual([res.status, res.body.code], [403, 'HERALD_ERR_API_DISABLED'], path)
  }
  const on = await startHerald(t, { config: { api: { keys: [KEY, OTHER_KEY] }, limits: { restMax: 3 } } })
  for (const key of [KEY, OTHER_KEY]) assert.equal((await api(on.url, 'GET', '/v1/api/nodes', undefined, { 'x-api-key': key })).status, 200)
  for (let i = 0; i < 3; i++) assert.equal((await api(on.url, 'GET', '/v1/api/nodes', undefined, { 'x-api-key': 'guess-' + String(i).repeat(16) })).status, 401)
  const locked = await api(on.url, 'GET', '/v1/api/nodes')
  assert.deepEqual([locked.status, locked.body.code], [429, 'HERALD_ERR_RATE_LIMITED'])
})

test('revocation stores: merged per subject or token id, bounded, gone once they end (memory and Redis)', async (t) => {
  const stores: Array<[string, RevocationStore]> = [['memory', new MemoryRevocations(2)]]
  if (skip === undefined) {
    const redis = await startRedis(t)
    stores.push(['redis', new RedisRevocations({ target: { url: redis.url }, prefix: 'rv-test', max: 2, log: pino({ level: 'silent' }) })])
  }
  const now = Math.floor(Date.now() / 1000)
  for (const [name, store] of stores) {
    await store.connect()
    t.after(async () => { await store.close() })
    const v0 = await store.version()
    assert.deepEqual(await store.add({ kind: 'sub', sub: 'a', before: now, until: now + 100 }, now), { kind: 'sub', sub: 'a', before: now, until: now + 100 }, name)
    // The same subject again: the later cutoff and the later end win.
    assert.deepEqual(await store.add({ kind: 'sub', sub: 'a', before: now + 5, until: now + 50 }, now + 5), { kind: 'sub', sub: 'a', before: now + 5, until: now + 100 }, name)
    await store.add({ kind: 'jti', jti: 'j1', until: now + 10 }, now)
    assert.notEqual(await store.version(), v0, name)
    await assert.rejects(store.add({ kind: 'sub', sub: 'b', before: now, until: now + 100 }, now), { code: 'HERALD_ERR_TOO_MANY_REVOCATIONS' }, name)
    assert.deepEqual((await store.all(now + 1)).map((r) => r.kind === 'sub' ? r.sub : r.jti).sort(), ['a', 'j1'], name)
    // Past j1's end it is gone, and its place is free.
    assert.deepEqual((await store.all(now + 11)).map((r) => r.kind === 'sub' ? r.sub : r.jti), ['a'], name)
    await store.add({ kind: 'sub', sub: 'b', before: now, until: now + 100 }, now + 11)
  }
  const list = new RevocationList()
  list.merge([{ kind: 'sub', sub: 'a', before: now, until: now + 100 }, { kind: 'jti', jti: 'j1', until: now + 10 }], now)
  assert.deepEqual([
    list.check({ sub: 'a', iat: now - 1 }, now), list.check({ sub: 'a', iat: now }, now), list.check({ sub: 'a' }, now),
    list.check({ sub: 'c', jti: 'j1', iat: now + 50 }, now), list.check({ sub: 'c', jti: 'j1' }, now + 10), list.check({ sub: 'a', iat: 0 }, now + 100)
  ], ['subject', undefined, 'subject', 'token id', undefined, undefined])
})

test('API_KEYS: each key at least 16 characters, or the server does not start', () => {
  assert.deepEqual(loadEnv({ API_KEYS: ` ${KEY} , ${OTHER_KEY}` }).API_KEYS, ` ${KEY} , ${OTHER_KEY}`)
  assert.throws(() => loadEnv({ API_KEYS: KEY + ',short' }), /API_KEYS: key 2 must be 16–256 characters/)
  assert.throws(() => loadEnv({ API_KEYS: 'has space inside it 0123' }), /API_KEYS: key 1/)
})

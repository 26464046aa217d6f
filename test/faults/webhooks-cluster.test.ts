import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { SseClient, startHerald, token, WsClient, type TestApp } from '../helper.js'
import { clusterSkipReason, startRedisCluster, type ClusterNode, type RedisCluster } from '../support/redis-cluster.js'
import { seededRandom, testSeed } from '../support/random.js'
import { Receiver, verifySignature, type Received } from '../support/webhook-receiver.js'
import { waitFor } from './scenario.js'

/*
 * Channel and user state webhooks (docs/webhooks.md) on a real Redis Cluster (3 primaries, a replica each): two
 * Herald nodes (A, B) with REDIS_CLUSTER, a real receiver, real WebSocket and SSE clients. Every webhook key lives
 * under one hash tag, so on one shard; the tests find that shard's primary and fail it over:
 *
 *  1. No fault: occupied/online and vacated/offline once each across the two nodes, debounced (a reconnect to the
 *     other node within the window sends nothing), signed, and a 500 retried with the same id, body and signature.
 *  2. The webhook shard's primary SIGKILLed (its replica in sync) while transitions are pending: a debounce check
 *     due during the outage, webhooks waiting for a retry, a join and a leave reported while the shard has no
 *     primary. After the promotion every one of them is announced.
 *  3. The same with a replica that lags (its replication link cut first): transitions acknowledged by the primary
 *     alone die with it. Every transition is still announced after the promotion.
 *
 * What may be duplicated, and is allowed to be: a webhook whose delivery was answered but whose removal from the
 * queue did not reach the (new) primary is delivered again with the same id (the receiver drops it by id: the
 * assertions use `delivered()`, which does); in 3, a transition whose announcement was acknowledged by the lost
 * primary alone (and delivered) may be announced once more with a new id, since the store that remembered it is
 * gone. Everything else is asserted exactly, once the queue is empty (nothing is still on its way).
 *
 * Waits are on events (a request at the receiver, the store's state on the shard's current primary, the cluster's
 * own view); the seeded randomness picks which node each client uses.
 */

const skip = clusterSkipReason()
const SEED = testSeed(0x3e6b)
const WEBHOOK_SECRET = 'webhook-secret-0123456789abcdef'
const PREFIX = 'hw'
/** The prefix of every webhook key: one hash tag, so one slot. */
const P = `{${PREFIX}:wh}:`
const TIMEOUT_MS = 1000

interface Setup {
  cluster: RedisCluster
  receiver: Receiver
  nodes: [TestApp, TestApp]
  /** The slot of every webhook key. */
  slot: number
  /** redis-cli against the current primary of the webhook slot. */
  store: (...args: string[]) => Promise<string>
  /** Seeded: which of the two nodes (0 or 1) a client goes to. */
  pick: () => 0 | 1
}

/**
 * `ttlSeconds` (PRESENCE_TTL): the failover tests use the default, 30 s, longer than a failover takes: the nodes'
 * members outlive it in the store (with a TTL shorter than the outage, every member would be reaped and every node
 * rejoin, which would hide what the failover itself lost).
 */
async function setup (t: TestContext, seed: number, debounceMs: number, ttlSeconds: number): Promise<Setup> {
  // Teardown in reverse order of start-up: clients, then Herald nodes, then the receiver and the cluster.
  const late: Array<() => unknown> = []
  const owned = { after: (fn: () => unknown) => { late.push(fn) } } as unknown as TestContext
  t.after(async () => { for (const fn of late.reverse()) await fn() })
  const cluster = await startRedisCluster(owned, { primaries: 3, replicasPerPrimary: 1 })
  const receiver = await Receiver.start(owned)
  const config = {
    redisCluster: cluster.seeds.split(','),
    redisPrefix: PREFIX,
    webhooks: { url: receiver.url, secret: WEBHOOK_SECRET, debounceMs, timeoutMs: TIMEOUT_MS, maxAttempts: 12, queueMax: 10_000 },
    presence: { ttlSeconds },
    pollLingerSeconds: 0
  }
  const a = await startHerald(owned, { config, options: { nodeId: 'A' } })
  const b = await startHerald(owned, { config, options: { nodeId: 'B' } })
  const slot = cluster.slotOf(P + 'nodes')
  const store = async (...args: string[]): Promise<string> => cluster.cli((await cluster.masterOf(slot)).port, ...args).trim()
  const random = seededRandom(seed)
  return { cluster, receiver, nodes: [a, b], slot, store, pick: () => random() < 0.5 ? 0 : 1 }
}

const kinds = (bodies: Array<Received['body']>): string[] => bodies.map((b) => b.type)

/** Every request of one id carries the same bytes and signature, and verifies with the secret. */
function checkSigned (receiver: Receiver): void {
  const first = new Map<string, Received>()
  for (const r of receiver.received) {
    assert.equal(verifySignature(r.raw, r.headers['x-herald-signature'], WEBHOOK_SECRET), true, `${r.body.id} signed with WEBHOOK_SECRET`)
    const seen = first.get(r.body.id)
    if (seen === undefined) { first.set(r.body.id, r); continue }
    assert.equal(r.raw, seen.raw, `${r.body.id}: the same body on every attempt`)
    assert.equal(r.headers['x-herald-signature'], seen.headers['x-herald-signature'], `${r.body.id}: the same signature on every attempt`)
  }
}

/** Requests answered 200 for an id already answered 200 before (what a receiver drops by id). */
function duplicates (receiver: Receiver): Received[] {
  const seen = new Set<string>()
  return receiver.received.filter((r) => {
    if (r.answer !== 'ok') return false
    if (seen.has(r.body.id)) return true
    seen.add(r.body.id)
    return false
  })
}

async function queueEmpty (s: Setup, timeoutMs = 60_000): Promise<void> {
  await waitFor(async () => {
    const n = await s.store('ZCARD', P + 'q')
    return n === '0' ? undefined : `${n} queued`
  }, 'the webhook queue is empty', timeoutMs)
}

async function wsClient (node: TestApp, sub: string, channel: string): Promise<WsClient> {
  const ws = await WsClient.connect(node.wsUrl, { token: token({ sub }) })
  ws.socket.on('error', () => {})
  await ws.subscribe(channel)
  return ws
}

async function sseClient (node: TestApp, sub: string, channel: string): Promise<SseClient> {
  const sse = await SseClient.open(node.url, [channel], { token: token({ sub }) })
  await sse.waitFor((m) => m.data.type === 'subscribed')
  return sse
}

test(`webhooks on a Redis Cluster, two nodes: once each, debounced across nodes, signed, a 500 retried with the same id (seed ${SEED})`, { skip, timeout: 180_000 }, async (t) => {
  const debounceMs = 2000
  const s = await setup(t, SEED, debounceMs, 3)
  const { receiver } = s
  const first = s.pick()
  const [here, there] = [s.nodes[first], s.nodes[1 - first]]
  // The first request is answered 500: that webhook comes again after the backoff, the same bytes.
  receiver.plan = ['fail']

  // 1. ann: a WebSocket on one node, an SSE stream on the other, one channel: online and occupied once.
  const ws = await wsClient(here, 'ann', 'room:c1')
  const sse = await sseClient(there, 'ann', 'room:c1')
  t.after(() => { ws.close(); sse.close() })
  await receiver.until(() => receiver.delivered().length === 2, 'online and occupied')

  // 2. The SSE stream goes (the WebSocket still holds both), then a reload: the WebSocket closes and a new one
  // opens on the other node at once. Nothing is announced for any of it.
  sse.close()
  await waitFor(async () => await s.store('SCARD', P + 'k:u:ann') === '1' ? undefined : 'two holders', 'one node holds ann', 30_000)
  ws.close()
  await ws.waitClosed()
  const again = await wsClient(there, 'ann', 'room:c1')
  t.after(() => { again.close() })
  // The store saw the close and the reopen, and any check the close scheduled has run ...
  await waitFor(async () => {
    const holders = await s.store('SMEMBERS', P + 'k:u:ann')
    const due = await s.store('ZCARD', P + 'due')
    return holders.startsWith(there.app.herald.nodeId + '.') && due === '0' ? undefined : `holders ${holders}, ${due} due`
  }, 'ann held by the other node only; no debounce check waiting', 30_000)
  // ... and a sentinel user coming and going after it, whose offline is due later than anything before, ends the
  // window in which a wrong offline/vacated could still be sent.
  const sentinel = await WsClient.connect(here.wsUrl, { token: token({ sub: 'sentinel' }) })
  await receiver.until(() => receiver.delivered({ sub: 'sentinel' }).length === 1, 'the sentinel is online')
  sentinel.close()
  await receiver.until(() => receiver.delivered({ sub: 'sentinel', type: 'user.offline' }).length === 1, 'the sentinel is offline', 30_000)
  await queueEmpty(s)
  assert.deepEqual(kinds(receiver.delivered({ sub: 'ann' })), ['user.online'], 'the reload sent nothing for ann')
  assert.deepEqual(kinds(receiver.delivered({ channel: 'room:c1' })), ['channel.occupied'], 'nor for room:c1')

  // 3. The last session goes: offline and vacated once, no sooner than the debounce.
  const closedAt = Date.now()
  again.close()
  await receiver.until(() => receiver.delivered({ sub: 'ann' }).length === 2 && receiver.delivered({ channel: 'room:c1' }).length === 2, 'offline and vacated', 30_000)
  await queueEmpty(s)
  assert.deepEqual(kinds(receiver.delivered({ sub: 'ann' })), ['user.online', 'user.offline'])
  assert.deepEqual(kinds(receiver.delivered({ channel: 'room:c1' })), ['channel.occupied', 'channel.vacated'])
  for (const b of [...receiver.delivered({ sub: 'ann', type: 'user.offline' }), ...receiver.delivered({ channel: 'room:c1', type: 'channel.vacated' })]) {
    assert.ok(b.ts >= closedAt + debounceMs, `${b.type} decided ${b.ts - closedAt} ms after the last close`)
  }

  // 4. The 500: one webhook was tried twice, the same bytes and signature, attempt 1 then 2, at least 1 s apart.
  const failed = receiver.received.filter((r) => r.answer === 'fail')
  assert.equal(failed.length, 1)
  const attempts = receiver.attempts(failed[0].body.id)
  assert.deepEqual(attempts.map((r) => [r.answer, r.headers['x-herald-attempt']]), [['fail', '1'], ['ok', '2']])
  assert.ok(attempts[1].at - attempts[0].at >= 1000, 'retried after the backoff')
  checkSigned(receiver)
  // No fault: nothing was delivered twice, and each webhook was sent by exactly one of the two nodes.
  assert.deepEqual(duplicates(receiver), [])
  assert.equal(receiver.received.length, receiver.delivered().length + 1)
})

/**
 * Kills the primary of the webhook slot (SIGKILL), runs `whileDown` (the slot has no primary), lets the replica be
 * promoted and waits until the cluster is settled; returns when the promotion was seen.
 */
async function failWebhookPrimary (s: Setup, whileDown: () => Promise<void>): Promise<{ killed: ClusterNode, promoted: ClusterNode, promotedAt: number }> {
  const killed = await s.cluster.masterOf(s.slot)
  const replica = (await s.cluster.nodes()).find((n) => n.masterId === killed.id)
  assert.ok(replica !== undefined, 'the webhook primary has a replica')
  await s.cluster.kill(killed.port)
  await whileDown()
  await waitFor(async () => (await s.cluster.masterOf(s.slot)).id === replica.id ? undefined : 'not promoted yet', 'the replica is promoted', 60_000)
  const promotedAt = Date.now()
  await s.cluster.waitSettled(`failover of the webhook slot from ${killed.port}`)
  return { killed, promoted: await s.cluster.masterOf(s.slot), promotedAt }
}

test(`webhook primary SIGKILLed while transitions are pending (replica in sync): every one announced after the promotion (seed ${SEED + 1})`, { skip, timeout: 300_000 }, async (t) => {
  // Long enough that bob's check is still pending when the primary dies (the kill follows within milliseconds),
  // and falls due while the slot has no primary.
  const debounceMs = 3000
  const s = await setup(t, SEED + 1, debounceMs, 30)
  const { receiver } = s
  const node = (): TestApp => s.nodes[s.pick()]

  // Before the fault: bob (WebSocket) and carol (SSE), announced and delivered.
  const bob = await wsClient(node(), 'bob', 'room:bob')
  const carol = await sseClient(node(), 'carol', 'room:carol')
  t.after(() => { bob.close(); carol.close() })
  await receiver.until(() => receiver.delivered().length === 4, 'bob and carol online, their rooms occupied', 30_000)

  // Pending 1: bob leaves; the store holds the two debounce checks.
  bob.close()
  await waitFor(async () => await s.store('ZCARD', P + 'due') === '2' ? undefined : 'no check due yet', 'bob\'s checks are due in the store', 30_000)
  // Pending 2: dave's webhooks are queued, and answered 500: waiting for their retry at the kill.
  receiver.mode = 'fail'
  const dave = await wsClient(node(), 'dave', 'room:dave')
  t.after(() => { dave.close() })
  const daveFailed = (): Received[] => receiver.received.filter((r) => r.answer === 'fail' && (r.body.sub === 'dave' || r.body.channel === 'room:dave'))
  await receiver.until(() => new Set(daveFailed().map((r) => r.body.id)).size === 2, 'dave\'s webhooks failed once', 30_000)
  const daveIds = [...new Set(daveFailed().map((r) => r.body.id))].sort()
  assert.deepEqual(receiver.received.filter((r) => r.body.sub === 'bob').map((r) => r.body.type), ['user.online'], 'bob\'s offline was still pending at the kill')

  // erin joins while the webhook slot has no primary, on a channel whose own (bus) slot is elsewhere.
  const webhookPrimary = await s.cluster.masterOf(s.slot)
  let erinRoom = ''
  for (let i = 0; i < 100 && erinRoom === ''; i++) {
    if ((await s.cluster.masterOf(s.cluster.slotOf(`${PREFIX}:{room:erin-${i}}`))).id !== webhookPrimary.id) erinRoom = `room:erin-${i}`
  }
  assert.notEqual(erinRoom, '')

  // The fault. While the slot has no primary: erin joins, carol leaves.
  let erin: WsClient | undefined
  t.after(() => { erin?.close() })
  const killedAt = Date.now()
  const { killed, promoted, promotedAt } = await failWebhookPrimary(s, async () => {
    erin = await wsClient(node(), 'erin', erinRoom)
    carol.close()
  })
  receiver.mode = 'ok'
  t.diagnostic(`primary ${killed.port} killed; ${promoted.port} promoted after ${promotedAt - killedAt} ms`)

  // After the promotion: every transition is announced.
  await receiver.until(() =>
    receiver.delivered({ sub: 'bob' }).length === 2 && receiver.delivered({ channel: 'room:bob' }).length === 2 &&
    receiver.delivered({ sub: 'carol' }).length === 2 && receiver.delivered({ channel: 'room:carol' }).length === 2 &&
    receiver.delivered({ sub: 'dave' }).length === 1 && receiver.delivered({ channel: 'room:dave' }).length === 1 &&
    receiver.delivered({ sub: 'erin' }).length === 1 && receiver.delivered({ channel: erinRoom }).length === 1,
  'every transition announced after the failover', 60_000)
  const announcedAfter = receiver.received.filter((r) => r.answer === 'ok' && r.at >= promotedAt).map((r) => r.at - promotedAt)
  // dave and erin leave after the failover: offline and vacated once.
  dave.close()
  erin!.close()
  await receiver.until(() => receiver.delivered({ sub: 'dave' }).length === 2 && receiver.delivered({ sub: 'erin' }).length === 2 &&
    receiver.delivered({ channel: 'room:dave' }).length === 2 && receiver.delivered({ channel: erinRoom }).length === 2, 'dave and erin offline, rooms vacated', 60_000)
  await queueEmpty(s)

  for (const who of ['bob', 'carol', 'dave', 'erin']) {
    const room = who === 'erin' ? erinRoom : `room:${who}`
    assert.deepEqual(kinds(receiver.delivered({ sub: who })), ['user.online', 'user.offline'], who)
    assert.deepEqual(kinds(receiver.delivered({ channel: room })), ['channel.occupied', 'channel.vacated'], room)
  }
  // dave's webhooks, failing at the kill, were delivered after it with their ids (a retry, not a new announcement).
  assert.deepEqual([...receiver.delivered({ sub: 'dave', type: 'user.online' }), ...receiver.delivered({ channel: 'room:dave', type: 'channel.occupied' })].map((b) => b.id).sort(), daveIds)
  for (const b of [...receiver.delivered({ sub: 'bob', type: 'user.offline' }), ...receiver.delivered({ channel: 'room:bob', type: 'channel.vacated' })]) {
    assert.ok(b.ts >= killedAt, `bob's ${b.type} was decided after the kill`)
  }
  checkSigned(receiver)
  const dup = duplicates(receiver)
  t.diagnostic(`announced ${announcedAfter.length} webhooks after the promotion, ${Math.min(...announcedAfter)}–${Math.max(...announcedAfter)} ms after it; ${dup.length} duplicate deliveries (same id): ${dup.map((r) => r.body.type).join(', ') || 'none'}`)
})

test(`webhook primary SIGKILLed with a lagging replica: transitions the primary alone acknowledged are still announced after the promotion (seed ${SEED + 2})`, { skip, timeout: 300_000 }, async (t) => {
  // Long enough that frank's check is still pending at the kill (as in the test above).
  const debounceMs = 3000
  const s = await setup(t, SEED + 2, debounceMs, 30)
  const { receiver } = s
  const node = (): TestApp => s.nodes[s.pick()]

  // Before the lag: frank, announced and delivered (and replicated).
  const frank = await wsClient(node(), 'frank', 'room:frank')
  t.after(() => { frank.close() })
  await receiver.until(() => receiver.delivered().length === 2, 'frank online, room:frank occupied', 30_000)

  // The replica of the webhook primary drops its link and cannot get back (the primary refuses the AUTH it now
  // sends): from here on, what the primary acknowledges is on the primary alone.
  const victim = await s.cluster.masterOf(s.slot)
  const replica = (await s.cluster.nodes()).find((n) => n.masterId === victim.id)!
  s.cluster.cli(replica.port, 'CONFIG', 'SET', 'masterauth', 'lagging-on-purpose')
  s.cluster.cli(replica.port, 'CLIENT', 'KILL', 'TYPE', 'master')
  await waitFor(() => /master_link_status:down/.test(s.cluster.cli(replica.port, 'INFO', 'replication')) ? undefined : 'link still up', 'the replica\'s link is down', 10_000)

  // On the primary alone: gina joins (announced and delivered), frank leaves (its checks due).
  const gina = await wsClient(node(), 'gina', 'room:gina')
  t.after(() => { gina.close() })
  await receiver.until(() => receiver.delivered({ sub: 'gina' }).length === 1 && receiver.delivered({ channel: 'room:gina' }).length === 1, 'gina online, room:gina occupied', 30_000)
  frank.close()
  await waitFor(async () => await s.store('ZCARD', P + 'due') === '2' ? undefined : 'no check due yet', 'frank\'s checks are due on the primary', 30_000)
  const beforeKill = receiver.delivered().length
  assert.deepEqual(receiver.received.filter((r) => r.body.sub === 'frank').map((r) => r.body.type), ['user.online'], 'frank\'s offline was still pending at the kill')

  const killedAt = Date.now()
  const { promoted, promotedAt } = await failWebhookPrimary(s, async () => {})
  assert.equal(promoted.id, replica.id)
  s.cluster.cli(promoted.port, 'CONFIG', 'SET', 'masterauth', '')
  // The promoted replica never saw gina nor frank's leave (unless a node has already reported again).
  const lost = { ginaJoin: await s.store('EXISTS', P + 'k:u:gina') === '0', frankLeave: await s.store('ZCARD', P + 'due') === '0' }
  t.diagnostic(`primary killed; lagging replica ${promoted.port} promoted after ${promotedAt - killedAt} ms; ${beforeKill} webhooks delivered before the kill; lost in the failover: ${JSON.stringify(lost)}`)

  // frank's leave, lost with the primary, is still announced.
  await receiver.until(() => receiver.delivered({ sub: 'frank' }).length === 2 && receiver.delivered({ channel: 'room:frank' }).length === 2, 'frank offline, room:frank vacated', 60_000)
  const frankAfter = receiver.received.filter((r) => r.answer === 'ok' && r.at >= promotedAt && r.body.sub === 'frank').map((r) => r.at - promotedAt)
  // gina leaves after the failover: offline and vacated, although the store had lost that she ever came.
  gina.close()
  await receiver.until(() => receiver.delivered({ sub: 'gina', type: 'user.offline' }).length === 1 && receiver.delivered({ channel: 'room:gina', type: 'channel.vacated' }).length === 1, 'gina offline, room:gina vacated', 60_000)
  await queueEmpty(s)

  assert.deepEqual(kinds(receiver.delivered({ sub: 'frank' })), ['user.online', 'user.offline'])
  assert.deepEqual(kinds(receiver.delivered({ channel: 'room:frank' })), ['channel.occupied', 'channel.vacated'])
  // gina's join, delivered before the kill, may be announced once more (a new id): the store that remembered it
  // announcing it is gone. Her leave is announced once.
  const ginaKinds = kinds(receiver.delivered({ sub: 'gina' }))
  const roomKinds = kinds(receiver.delivered({ channel: 'room:gina' }))
  assert.ok(['user.online,user.offline', 'user.online,user.online,user.offline'].includes(ginaKinds.join()), ginaKinds.join())
  assert.ok(['channel.occupied,channel.vacated', 'channel.occupied,channel.occupied,channel.vacated'].includes(roomKinds.join()), roomKinds.join())
  checkSigned(receiver)
  const dup = duplicates(receiver)
  t.diagnostic(`frank's offline/vacated ${frankAfter.join(', ')} ms after the promotion; gina announced again with a new id: ${String(ginaKinds.length === 3)}/${String(roomKinds.length === 3)}; ${dup.length} duplicate deliveries (same id)`)
})

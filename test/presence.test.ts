import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import WebSocket from 'ws'
import {
  ROOT, SECRET, entryArgs, eachBus, freePort, publish, redisSkipReason, startHerald, startRedis, token, until, WsClient,
  type Frame
} from './helper.js'
import { withTimeout } from './support/process.js'
import type { DeepPartial, HeraldConfig } from '../src/config.js'
import type { NamespacesFile } from '../src/namespaces.js'

// Presence: who is subscribed, cluster-wide, grouped by token `sub`; join/leave diffs; counts; caps; cleanup on
// every way a connection ends; two nodes on one Redis; no ghost member outliving a SIGKILLed node.

const TTL = 3
const BATCH_MS = 50

const NAMESPACES: NamespacesFile = {
  namespaces: {
    chat: { presence: true, joinLeave: true },
    stadium: { presence: true, presenceCountsOnly: true },
    vip: { presence: true, joinLeave: true, maxMembers: 2 },
    plain: { presence: false },
    exit: { presence: true, joinLeave: true, historySize: 5 }
  }
}

function config (extra: DeepPartial<HeraldConfig> = {}): DeepPartial<HeraldConfig> {
  return { namespaces: NAMESPACES, presence: { ttlSeconds: TTL, batchMs: BATCH_MS }, ...extra }
}

interface Member { sub: string, info?: unknown, connections: Array<{ client: string, connectedAt: number }> }
interface Joined { c: WsClient, id: string }

/** Connects as `sub` (token claims `extra`), closes at the end of the test, and returns the connection id. */
async function connect (t: TestContext, wsUrl: string, sub: string, extra: Record<string, unknown> = {}): Promise<Joined> {
  const c = await WsClient.connect(wsUrl, { token: token({ sub, ...extra }) })
  t.after(() => { if (c.closed === null) c.socket.terminate() })
  const connected = await c.waitFor((f) => f.type === 'connected')
  assert.equal(connected.sub, sub)
  return { c, id: connected.client }
}

async function member (t: TestContext, wsUrl: string, sub: string, channel: string, extra: Record<string, unknown> = {}): Promise<Joined> {
  const j = await connect(t, wsUrl, sub, extra)
  await j.c.subscribe(channel)
  return j
}

async function get (url: string, tok = token()): Promise<{ status: number, body: any }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${tok}` } })
  return { status: res.status, body: await res.json() }
}

async function restPresence (base: string, channel: string, tok?: string): Promise<{ status: number, body: any }> {
  return await get(`${base}/v1/channels/${encodeURIComponent(channel)}/presence`, tok)
}

async function restCount (base: string, channel: string, tok?: string): Promise<{ status: number, body: any }> {
  return await get(`${base}/v1/channels/${encodeURIComponent(channel)}/presence/count`, tok)
}

/** Connection ids listed by the REST presence route. */
async function clientsIn (base: string, channel: string): Promise<string[]> {
  const res = await restPresence(base, channel)
  assert.equal(res.status, 200, JSON.stringify(res.body))
  return (res.body.members as Member[]).flatMap((m) => m.connections.map((c) => c.client))
}

async function waitGone (base: string, channel: string, client: string, what: string, timeoutMs = 3000): Promise<void> {
  await until(async () => !(await clientsIn(base, channel)).includes(client), `${what}: presence entry ${client} removed`, timeoutMs)
}

const diffs = (c: WsClient, channel: string): Frame[] => c.frames.filter((f) => f.type === 'presence_diff' && f.channel === channel)
const joinsOf = (c: WsClient, channel: string, sub: string): Array<{ sub: string, info?: unknown }> =>
  diffs(c, channel).flatMap((f) => f.joins as Array<{ sub: string, info?: unknown }>).filter((j) => j.sub === sub)
const leavesOf = (c: WsClient, channel: string, sub: string): Array<{ sub: string }> =>
  diffs(c, channel).flatMap((f) => f.leaves as Array<{ sub: string }>).filter((l) => l.sub === sub)

async function waitJoin (c: WsClient, channel: string, sub: string, timeoutMs = 3000): Promise<Frame> {
  return await c.waitFor((f) => f.type === 'presence_diff' && f.channel === channel && f.joins.some((j: { sub: string }) => j.sub === sub), timeoutMs)
}

async function waitLeave (c: WsClient, channel: string, sub: string, timeoutMs = 3000): Promise<Frame> {
  return await c.waitFor((f) => f.type === 'presence_diff' && f.channel === channel && f.leaves.some((l: { sub: string }) => l.sub === sub), timeoutMs)
}


// ---------------------------------------------------------------- listing

eachBus('presence lists members grouped by sub (3 connections, 2 members) over WebSocket and REST', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: config() })
  const ch = 'chat:list'
  const before = Date.now()
  const aliceInfo = { name: 'Alice', role: 'admin', tags: ['x', 1] }
  const alice = await member(t, wsUrl, 'alice', ch, { info: aliceInfo })
  const bob1 = await member(t, wsUrl, 'bob', ch)
  const bob2 = await member(t, wsUrl, 'bob', ch)
  const after = Date.now()

  const check = (members: Member[], count: unknown, where: string): void => {
    assert.deepEqual(members.map((m) => m.sub), ['alice', 'bob'], where)
    assert.deepEqual(count, { members: 2, connections: 3 }, where)
    const [a, b] = members
    assert.deepEqual(a.info, aliceInfo, where + ': alice keeps her info claim')
    assert.equal('info' in b, false, where + ': bob has no info claim, so no info field')
    assert.deepEqual(a.connections.map((c) => c.client), [alice.id], where)
    assert.deepEqual(b.connections.map((c) => c.client).sort(), [bob1.id, bob2.id].sort(), where + ': both tabs of bob under one member')
    for (const c of [...a.connections, ...b.connections]) {
      assert.ok(Number.isInteger(c.connectedAt) && c.connectedAt >= before - 1000 && c.connectedAt <= after + 1000, where + ': connectedAt ' + c.connectedAt)
    }
  }

  // WebSocket presence frame, from a tab of bob.
  bob2.c.send({ type: 'presence', channel: ch, id: 'p1' })
  const reply = await bob2.c.waitFor((f) => f.type === 'presence' && f.id === 'p1')
  assert.equal(reply.channel, ch)
  check(reply.members, reply.count, 'ws presence')
  const ack = await bob2.c.waitFor((f) => f.id === 'p1' && (f.type === 'ack' || f.type === 'error'))
  assert.equal(ack.type, 'ack')

  // REST, with a token of someone not in the channel.
  const list = await restPresence(url, ch, token({ sub: 'outsider', subscribe: ['chat:*'] }))
  assert.equal(list.status, 200, JSON.stringify(list.body))
  assert.equal(list.body.channel, ch)
  check(list.body.members, list.body.count, 'rest presence')
  const count = await restCount(url, ch)
  assert.equal(count.status, 200)
  assert.deepEqual(count.body, { channel: ch, members: 2, connections: 3 })

  // An empty channel of a presence namespace: no members.
  assert.deepEqual((await restCount(url, 'chat:empty')).body, { channel: 'chat:empty', members: 0, connections: 0 })
  assert.deepEqual((await restPresence(url, 'chat:empty')).body, { channel: 'chat:empty', members: [], count: { members: 0, connections: 0 } })
})

// ---------------------------------------------------------------- join / leave

eachBus('join/leave diffs are per member: one join with the first tab, one leave with the last', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: config() })
  const ch = 'chat:jl'
  const alice = await member(t, wsUrl, 'alice', ch, { info: { name: 'Alice' } })

  const bob1 = await connect(t, wsUrl, 'bob')
  await bob1.c.subscribe(ch)
  const first = await waitJoin(alice.c, ch, 'bob')
  assert.deepEqual(first.joins.filter((j: { sub: string }) => j.sub === 'bob'), [{ sub: 'bob' }], 'bob has no info claim')
  assert.deepEqual(first.leaves, [])

  const bob2 = await connect(t, wsUrl, 'bob')
  await bob2.c.subscribe(ch)
  // A later join (carol) is announced after anything bob's second tab could have caused.
  const carolInfo = { name: 'Carol', avatar: 'c.png' }
  await member(t, wsUrl, 'carol', ch, { info: carolInfo })
  const carolJoin = await waitJoin(alice.c, ch, 'carol')
  assert.deepEqual(carolJoin.joins.find((j: { sub: string }) => j.sub === 'carol'), { sub: 'carol', info: carolInfo }, 'the join carries the info claim')
  assert.equal(joinsOf(alice.c, ch, 'bob').length, 1, 'bob\'s second tab is not a second join: ' + JSON.stringify(diffs(alice.c, ch)))
  assert.equal(leavesOf(alice.c, ch, 'bob').length, 0)

  // bob closes one tab: still a member, no leave.
  bob1.c.close()
  await waitGone(url, ch, bob1.id, 'bob tab 1 closed')
  await member(t, wsUrl, 'dave', ch)
  await waitJoin(alice.c, ch, 'dave')
  assert.equal(leavesOf(alice.c, ch, 'bob').length, 0, 'no leave while bob has a tab open: ' + JSON.stringify(diffs(alice.c, ch)))
  const mid = await restPresence(url, ch)
  assert.deepEqual((mid.body.members as Member[]).map((m) => m.sub), ['alice', 'bob', 'carol', 'dave'])

  // bob closes his last tab: one leave.
  bob2.c.close()
  const leave = await waitLeave(alice.c, ch, 'bob')
  assert.deepEqual(leave.joins.filter((j: { sub: string }) => j.sub === 'bob'), [])
  await member(t, wsUrl, 'erin', ch)
  await waitJoin(alice.c, ch, 'erin')
  assert.equal(joinsOf(alice.c, ch, 'bob').length, 1, JSON.stringify(diffs(alice.c, ch)))
  assert.equal(leavesOf(alice.c, ch, 'bob').length, 1, JSON.stringify(diffs(alice.c, ch)))
  const end = await restPresence(url, ch)
  assert.deepEqual((end.body.members as Member[]).map((m) => m.sub), ['alice', 'carol', 'dave', 'erin'])
  assert.deepEqual(end.body.count, { members: 4, connections: 4 })
})

eachBus('20 members joining within one batch window reach a subscriber as a few presence_diff frames', async (t, bus) => {
  // A slightly wider window than elsewhere so that two busy cores cannot spread 20 joins over many windows.
  const batchMs = 100
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: config({ presence: { ttlSeconds: TTL, batchMs } }) })
  const ch = 'chat:batch'
  const alice = await member(t, wsUrl, 'alice', ch)
  // Before the burst, a barrier: a member who joins and leaves. Diffs go out in order, so once alice has seen
  // that leave, whatever her own join caused (if echoed to her) is in, and nothing of it can count as the burst's.
  const warmup = await member(t, wsUrl, 'warmup', ch)
  await waitJoin(alice.c, ch, 'warmup', 10_000)
  warmup.c.close()
  await waitLeave(alice.c, ch, 'warmup', 10_000)
  const from = alice.c.frames.length

  const N = 20
  const subs = Array.from({ length: N }, (_, i) => `fan-${String(i).padStart(2, '0')}`)
  const fans = await Promise.all(subs.map(async (sub, i) => await connect(t, wsUrl, sub, { info: { seat: i } })))
  for (const [i, f] of fans.entries()) f.c.send({ type: 'subscribe', channel: ch, id: 'b' + i })
  await Promise.all(fans.map(async (f, i) => {
    const r = await f.c.waitFor((x) => x.id === 'b' + i && (x.type === 'ack' || x.type === 'error'))
    assert.equal(r.type, 'ack', JSON.stringify(r))
  }))

  const frames = (): Frame[] => alice.c.frames.slice(from).filter((f) => f.type === 'presence_diff' && f.channel === ch)
  const joined = (): Array<{ sub: string, info?: unknown }> => frames().flatMap((f) => f.joins)
  await until(() => new Set(joined().map((j) => j.sub)).size >= N, 'all 20 joins reached alice: ' + JSON.stringify(joined()), 10_000)
  assert.deepEqual((await restCount(url, ch)).body, { channel: ch, members: N + 1, connections: N + 1 })
  // A barrier instead of a pause: one more member joins after the burst is in. Once alice has seen that join,
  // any straggling frame of the burst (a repeated join, a late diff) is in too. The barrier's own join is left
  // out of what is counted below (it may share its frame with a straggler: that frame still counts).
  await member(t, wsUrl, 'zz-barrier', ch)
  await waitJoin(alice.c, ch, 'zz-barrier', 10_000)
  const burst = frames().filter((f) => f.leaves.length > 0 || f.joins.some((j: { sub: string }) => j.sub !== 'zz-barrier'))
  const burstJoins = joined().filter((j) => j.sub !== 'zz-barrier')
  assert.ok(burst.length <= 5, `${N} joins arrived in ${burst.length} presence_diff frames (want a few, far below ${N})`)
  assert.deepEqual(burstJoins.map((j) => j.sub).sort(), subs, 'each fan joined exactly once')
  for (const j of burstJoins) assert.deepEqual(j.info, { seat: subs.indexOf(j.sub) })
  assert.deepEqual(frames().flatMap((f) => f.leaves), [])
})

// ---------------------------------------------------------------- counts-only

eachBus('a counts-only namespace sends presence_count frames with the current counts, never member lists', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: config() })
  const ch = 'stadium:final'
  const watcher = await member(t, wsUrl, 'watcher', ch)
  await member(t, wsUrl, 'bob', ch)
  await member(t, wsUrl, 'bob', ch)
  // carol's join is a member change: the frame it causes carries the counts at that time (bob's 2 tabs included).
  const carol = await member(t, wsUrl, 'carol', ch, { info: { name: 'Carol' } })
  const counts = (): Frame[] => watcher.c.frames.filter((f) => f.type === 'presence_count' && f.channel === ch)
  await watcher.c.waitFor((f) => f.type === 'presence_count' && f.members === 3 && f.connections === 4)
  const last = counts().at(-1)!
  assert.deepEqual(last, { type: 'presence_count', channel: ch, members: 3, connections: 4 })
  assert.deepEqual((await restCount(url, ch)).body, { channel: ch, members: 3, connections: 4 })

  const from = watcher.c.frames.length // an earlier frame may also have read {2, 3} (bob's 2 tabs before carol)
  carol.c.close()
  await watcher.c.waitFor((f) => f.type === 'presence_count' && f.members === 2 && f.connections === 3, 3000, from)
  assert.deepEqual(counts().at(-1), { type: 'presence_count', channel: ch, members: 2, connections: 3 })
  for (const f of counts()) assert.deepEqual(Object.keys(f).sort(), ['channel', 'connections', 'members', 'type'])
  assert.equal(watcher.c.frames.filter((f) => f.type === 'presence_diff').length, 0, 'no member lists in a counts-only namespace')
  // Nor are member lists built on request: REST and WebSocket presence queries are refused with their own code.
  const list = await restPresence(url, ch)
  assert.equal(list.status, 400)
  assert.equal(list.body.code, 'HERALD_ERR_PRESENCE_COUNTS_ONLY')
  watcher.c.send({ type: 'presence', channel: ch, id: 'p-list' })
  const refused = await watcher.c.waitFor((f) => f.id === 'p-list')
  assert.equal(refused.type, 'error')
  assert.equal(refused.code, 'HERALD_ERR_PRESENCE_COUNTS_ONLY')
})

eachBus('a counts-only namespace also sends presence_count when only the number of connections changes', async (t, bus) => {
  // presence_count carries `connections`; a tab opening or closing changes it without any member joining or leaving.
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: config() })
  const ch = 'stadium:tabs'
  const watcher = await member(t, wsUrl, 'watcher', ch)
  await watcher.c.waitFor((f) => f.type === 'presence_count' && f.members === 1 && f.connections === 1)
  const tab = await member(t, wsUrl, 'watcher', ch) // a second tab of the same member
  assert.deepEqual((await restCount(url, ch)).body, { channel: ch, members: 1, connections: 2 })
  await watcher.c.waitFor((f) => f.type === 'presence_count' && f.members === 1 && f.connections === 2, 2000)
  tab.c.close()
  await watcher.c.waitFor((f) => f.type === 'presence_count' && f.members === 1 && f.connections === 1, 2000, watcher.c.frames.length)
})

// ---------------------------------------------------------------- member cap

eachBus('maxMembers caps distinct subs: a third sub is refused with CHANNEL_FULL, a second tab is accepted', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: config() })
  const ch = 'vip:room'
  const alice = await member(t, wsUrl, 'alice', ch)
  await member(t, wsUrl, 'bob', ch)

  const carol = await connect(t, wsUrl, 'carol')
  carol.c.send({ type: 'subscribe', channel: ch, id: 'full-1' })
  const refused = await carol.c.waitFor((f) => f.id === 'full-1' && (f.type === 'error' || f.type === 'ack'))
  assert.equal(refused.type, 'error')
  assert.equal(refused.code, 'HERALD_ERR_CHANNEL_FULL')
  assert.equal(refused.channel, ch)
  assert.equal(carol.c.frames.some((f) => f.type === 'subscribed'), false)

  const bob2 = await connect(t, wsUrl, 'bob')
  const ok = await bob2.c.subscribe(ch)
  assert.equal(ok.channel, ch)
  assert.deepEqual((await restCount(url, ch)).body, { channel: ch, members: 2, connections: 3 })
  assert.deepEqual(((await restPresence(url, ch)).body.members as Member[]).map((m) => m.sub), ['alice', 'bob'])

  // The refused subscribe left nothing behind, and the socket still works: once alice leaves, carol gets in.
  alice.c.send({ type: 'unsubscribe', channel: ch })
  await waitGone(url, ch, alice.id, 'alice unsubscribed')
  await carol.c.subscribe(ch)
  assert.deepEqual((await restCount(url, ch)).body, { channel: ch, members: 2, connections: 3 })
  assert.deepEqual(((await restPresence(url, ch)).body.members as Member[]).map((m) => m.sub), ['bob', 'carol'])
})

// ---------------------------------------------------------------- refusals

eachBus('presence is refused where it is disabled (PRESENCE_DISABLED) and without subscribe permission (FORBIDDEN)', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: config() })
  const alice = await member(t, wsUrl, 'alice', 'plain:room') // subscribing works; it is only not tracked
  for (const res of [await restPresence(url, 'plain:room'), await restCount(url, 'plain:room'), await restPresence(url, 'nons')]) {
    assert.equal(res.status, 404, JSON.stringify(res.body))
    assert.equal(res.body.code, 'HERALD_ERR_PRESENCE_DISABLED')
  }
  alice.c.send({ type: 'presence', channel: 'plain:room', id: 'pd' })
  const off = await alice.c.waitFor((f) => f.id === 'pd' && f.type !== 'presence')
  assert.equal(off.type, 'error')
  assert.equal(off.code, 'HERALD_ERR_PRESENCE_DISABLED')
  assert.equal(off.channel, 'plain:room')
  assert.equal(alice.c.frames.some((f) => f.type === 'presence'), false)

  // Presence of a channel reveals who is in it: it needs subscribe permission on that channel.
  await member(t, wsUrl, 'bob', 'chat:secret')
  const outsider = token({ sub: 'mallory', subscribe: ['chat:public', 'plain:*'] })
  for (const res of [await restPresence(url, 'chat:secret', outsider), await restCount(url, 'chat:secret', outsider)]) {
    assert.equal(res.status, 403, JSON.stringify(res.body))
    assert.equal(res.body.code, 'HERALD_ERR_FORBIDDEN')
    assert.equal(JSON.stringify(res.body).includes('bob'), false)
  }
  assert.equal((await restPresence(url, 'chat:public', outsider)).status, 200, 'allowed where the token may subscribe')
  const m = await connect(t, wsUrl, 'mallory', { subscribe: ['chat:public'] })
  m.c.send({ type: 'presence', channel: 'chat:secret', id: 'pf' })
  const forbidden = await m.c.waitFor((f) => f.id === 'pf' && f.type !== 'presence')
  assert.equal(forbidden.type, 'error')
  assert.equal(forbidden.code, 'HERALD_ERR_FORBIDDEN')
  assert.equal(m.c.frames.some((f) => f.type === 'presence'), false)
})

// ---------------------------------------------------------------- cleanup on every exit

eachBus('a presence entry is removed on unsubscribe, socket close, slow-consumer eviction and drain', async (t, bus) => {
  const { app, url, wsUrl } = await startHerald(t, {
    redisUrl: bus.redisUrl,
    config: config({ maxBufferBytes: 16384, maxBodyBytes: 1024 * 1024 })
  })
  const ch = 'exit:1'
  const alice = await member(t, wsUrl, 'alice', ch)

  // 1. unsubscribe frame
  const u = await member(t, wsUrl, 'u-unsub', ch)
  assert.ok((await clientsIn(url, ch)).includes(u.id))
  u.c.send({ type: 'unsubscribe', channel: ch, id: 'un' })
  assert.equal((await u.c.waitFor((f) => f.id === 'un')).type, 'ack')
  await waitGone(url, ch, u.id, 'unsubscribe')
  await waitLeave(alice.c, ch, 'u-unsub')
  assert.equal(u.c.closed, null, 'the socket itself stays open')

  // 2. socket close
  const c = await member(t, wsUrl, 'u-close', ch)
  assert.ok((await clientsIn(url, ch)).includes(c.id))
  c.c.close()
  await waitGone(url, ch, c.id, 'close')
  await waitLeave(alice.c, ch, 'u-close')

  // 3. slow consumer: its TCP socket is not read, large events pile up until it is evicted.
  const slow = await member(t, wsUrl, 'u-slow', ch)
  assert.ok((await clientsIn(url, ch)).includes(slow.id))
  ;(slow.c.socket as any)._socket.pause()
  t.after(() => slow.c.socket.terminate())
  const wsBefore = app.herald.connections.count('websocket')
  const big = 'x'.repeat(256 * 1024)
  let sent = 0
  while (app.herald.connections.count('websocket') === wsBefore) {
    assert.ok(sent < 150, 'the slow consumer was not evicted after ' + sent + ' events of 256 KiB')
    const res = await publish(url, ch, { big, n: ++sent })
    assert.equal(res.status, 201, JSON.stringify(res.body))
  }
  await waitGone(url, ch, slow.id, 'slow-consumer eviction')
  await waitLeave(alice.c, ch, 'u-slow')
  const evictions = (await app.herald.metrics.evictions.get()).values.find((v) => v.labels.transport === 'websocket' && v.labels.reason === 'disconnect')
  assert.equal(evictions?.value, 1, 'evicted as a slow consumer (not for another reason)')
  // The reader kept up and got every event.
  await alice.c.events(ch, sent)
  slow.c.socket.terminate()

  // 4. drain: every connection closes, every entry goes.
  const d = await member(t, wsUrl, 'u-drain', ch)
  assert.deepEqual((await clientsIn(url, ch)).sort(), [alice.id, d.id].sort())
  app.herald.drain()
  assert.equal((await d.c.waitClosed(3000)).code, 1012)
  assert.equal((await alice.c.waitClosed(3000)).code, 1012)
  await until(async () => (await clientsIn(url, ch)).length === 0, 'drain removed every presence entry', 3000)
  assert.deepEqual((await restCount(url, ch)).body, { channel: ch, members: 0, connections: 0 })
})

/** A raw `ws` client that never answers pings (autoPong: false). */
async function deafClient (t: TestContext, wsUrl: string, sub: string): Promise<{ socket: WebSocket, frames: Frame[], closed: Promise<number>, pings: () => number, openedAt: number }> {
  const socket = new WebSocket(`${wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${token({ sub })}` }, autoPong: false })
  t.after(() => socket.terminate())
  const frames: Frame[] = []
  let pings = 0
  socket.on('message', (data) => frames.push(JSON.parse(data.toString()) as Frame))
  socket.on('ping', () => { pings++ })
  const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)))
  await new Promise<void>((resolve, reject) => { socket.once('open', () => resolve()); socket.once('error', reject) })
  socket.on('error', () => {})
  return { socket, frames, closed, pings: () => pings, openedAt: Date.now() }
}

eachBus('a presence entry is removed when a client that never answers pings is terminated (heartbeat)', async (t, bus) => {
  const { app, url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: config({ wsPingIntervalSeconds: 1 }) })
  const ch = 'exit:hb'
  const alice = await member(t, wsUrl, 'alice', ch) // a normal client: it answers pings and stays
  const deaf = await deafClient(t, wsUrl, 'u-deaf')
  deaf.socket.send(JSON.stringify({ type: 'subscribe', channel: ch, id: 's' }))
  await until(() => deaf.frames.some((f) => f.id === 's' && f.type === 'ack'), 'deaf client subscribed', 3000)
  const id = deaf.frames.find((f) => f.type === 'connected')!.client as string
  assert.ok((await clientsIn(url, ch)).includes(id))

  // Pinged at the next round of the 1 s loop, terminated at the round after. Wait for the termination itself (the
  // bound only says when to call it a hang): nothing else ends this socket.
  const code = await withTimeout(deaf.closed, 15_000, 'the server to terminate a client that never answers pings')
  assert.equal(code, 1006, 'terminated, not closed with a handshake')
  assert.ok(deaf.pings() >= 1, 'it was pinged first')
  await waitGone(url, ch, id, 'heartbeat timeout')
  await waitLeave(alice.c, ch, 'u-deaf')
  assert.equal((await app.herald.metrics.heartbeatTimeouts.get()).values[0]?.value, 1)
  assert.equal(alice.c.closed, null, 'the client that answers pings is kept')
  assert.deepEqual(await clientsIn(url, ch), [alice.id])
})

// ---------------------------------------------------------------- two nodes

void test('two nodes on one Redis: a member on A is seen from B, and join/leave frames cross nodes', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const a = await startHerald(t, { redisUrl: redis.url, config: config(), options: { nodeId: 'pa' } })
  const b = await startHerald(t, { redisUrl: redis.url, config: config(), options: { nodeId: 'pb' } })
  const ch = 'chat:cluster'

  const alice = await member(t, a.wsUrl, 'alice', ch, { info: { home: 'A' } })
  assert.ok(alice.id.startsWith('pa-'))
  // REST and WS queries on B see alice's connection on A.
  const fromB = await restPresence(b.url, ch)
  assert.equal(fromB.status, 200)
  assert.deepEqual(fromB.body.members, [{ sub: 'alice', info: { home: 'A' }, connections: [{ client: alice.id, connectedAt: (fromB.body.members as Member[])[0].connections[0].connectedAt }] }])
  assert.deepEqual((await restCount(b.url, ch)).body, { channel: ch, members: 1, connections: 1 })

  const bob = await member(t, b.wsUrl, 'bob', ch)
  assert.ok(bob.id.startsWith('pb-'))
  await waitJoin(alice.c, ch, 'bob') // B's join reaches A's subscriber
  bob.c.send({ type: 'presence', channel: ch, id: 'q' })
  const q = await bob.c.waitFor((f) => f.type === 'presence' && f.id === 'q')
  assert.deepEqual((q.members as Member[]).map((m) => [m.sub, m.connections.map((c) => c.client)]), [['alice', [alice.id]], ['bob', [bob.id]]])

  // bob's second tab on A: one member with connections on both nodes.
  const bobA = await member(t, a.wsUrl, 'bob', ch)
  const both = await restPresence(a.url, ch)
  assert.deepEqual((both.body.members as Member[]).find((m) => m.sub === 'bob')!.connections.map((c) => c.client).sort(), [bob.id, bobA.id].sort())
  assert.deepEqual(both.body.count, { members: 2, connections: 3 })

  // carol joins and leaves on A; bob on B sees both.
  const carol = await member(t, a.wsUrl, 'carol', ch)
  await waitJoin(bob.c, ch, 'carol')
  carol.c.close()
  await waitLeave(bob.c, ch, 'carol')
  // bob closes his tab on B: he is still a member through A, so no leave; closing A's tab then leaves.
  bob.c.close()
  await waitGone(a.url, ch, bob.id, 'bob tab on B closed')
  const dave = await member(t, b.wsUrl, 'dave', ch)
  await waitJoin(alice.c, ch, 'dave')
  assert.equal(leavesOf(alice.c, ch, 'bob').length, 0, JSON.stringify(diffs(alice.c, ch)))
  bobA.c.close()
  await waitLeave(alice.c, ch, 'bob')
  assert.equal(joinsOf(alice.c, ch, 'bob').length, 1)
  assert.equal(leavesOf(alice.c, ch, 'bob').length, 1)
  assert.deepEqual(((await restPresence(b.url, ch)).body.members as Member[]).map((m) => m.sub), ['alice', 'dave'])
  assert.ok(dave.id.startsWith('pb-'))
})

// ---------------------------------------------------------------- ghost-free after SIGKILL

void test('a node killed with SIGKILL leaves no ghost member: B drops it by itself and announces the leave once its entry has expired', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(join(tmpdir(), 'herald-ghost-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const nsFile = join(dir, 'namespaces.json')
  writeFileSync(nsFile, JSON.stringify({ namespaces: { chat: { presence: true, joinLeave: true } } }))
  const port = await freePort()
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    JWT_SECRET: SECRET,
    REDIS_URL: redis.url,
    REDIS_PREFIX: 'herald-test',
    NAMESPACES_FILE: nsFile,
    PRESENCE_TTL: String(TTL),
    LOG_LEVEL: 'warn'
  }
  delete env.NODE_TEST_CONTEXT
  delete env.NODE_ENV
  const child = spawn(process.execPath, entryArgs('src/server.ts'), { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { output += d.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.after(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited } })

  const base = `http://127.0.0.1:${port}`
  // Booting through tsx takes 5–10 s on this machine (more on busy cores); this returns as soon as it answers.
  await until(async () => {
    if (child.exitCode !== null) throw new Error('the child Herald exited: ' + output)
    try { return (await fetch(base + '/healthz')).status === 200 } catch { return false }
  }, 'the child Herald answers /healthz', 45_000).catch((err: Error) => { throw new Error(err.message + '; its output: ' + output) })

  const ch = 'chat:ghost'
  const ghost = await member(t, `ws://127.0.0.1:${port}`, 'ghost', ch)
  ghost.c.socket.on('error', () => {})
  const b = await startHerald(t, { redisUrl: redis.url, config: { namespaces: { namespaces: { chat: { presence: true, joinLeave: true } } }, presence: { ttlSeconds: TTL, batchMs: BATCH_MS } } })
  const watcher = await member(t, b.wsUrl, 'watcher', ch)
  const seen = await restPresence(b.url, ch)
  assert.deepEqual((seen.body.members as Member[]).map((m) => [m.sub, m.connections.map((c) => c.client)]), [['ghost', [ghost.id]], ['watcher', [watcher.id]]])

  // The entry's expiry (ms) in Redis, as the child's node sets it and refreshes it every TTL/3. Read with
  // redis-cli: no Herald script runs for it, so it removes nothing.
  const expiryOf = (): number => {
    const out = spawnSync('redis-cli', ['-p', String(redis.port), 'ZSCORE', `herald-test:{${ch}}:pz`, ghost.id], { encoding: 'utf8' })
    return Number(out.stdout.trim())
  }
  const joinedExpiry = expiryOf()
  assert.ok(joinedExpiry > 0, `the ghost's presence entry is in Redis (score ${joinedExpiry})`)
  // Let the child refresh its entry at least once (its expiry moves on), so the leave follows a refreshed entry.
  await until(() => expiryOf() > joinedExpiry, 'the child refreshes its presence entry', 15_000)
  assert.ok(child.pid !== undefined)
  process.kill(child.pid, 'SIGKILL')
  await exited
  assert.equal(child.signalCode, 'SIGKILL')
  // Nothing refreshes the entry any more: it expires at this instant, and only then may it be dropped.
  const expiresAt = expiryOf()
  assert.ok(expiresAt > joinedExpiry)

  // Only B's own periodic refresh touches the channel (no query from here until the leave arrives). The docs
  // promise the leave within PRESENCE_TTL + PRESENCE_TTL / 3 of the kill; the wait's bound is that plus a wide
  // margin, as a failure bound only. What is asserted is the cause: the leave came once the entry had expired
  // (a lower bound: a slow machine only makes it later) and without any client doing anything.
  const leave = await waitLeave(watcher.c, ch, 'ghost', TTL * 1000 + TTL * 1000 / 3 + 15_000)
  const leftAt = Date.now()
  assert.ok(leftAt >= expiresAt, `the leave arrived ${expiresAt - leftAt} ms before the ghost's entry expired`)
  assert.deepEqual(leave.leaves, [{ sub: 'ghost' }])
  const after = await restPresence(b.url, ch)
  assert.deepEqual((after.body.members as Member[]).map((m) => m.sub), ['watcher'])
  assert.deepEqual(after.body.count, { members: 1, connections: 1 })
})

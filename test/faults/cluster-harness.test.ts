import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { Cluster, Redis } from 'ioredis'
import { clusterSkipReason, keySlot, startRedisCluster, type ClusterNode, type RedisCluster } from '../support/redis-cluster.js'

/*
 * The Redis Cluster harness (test/support/redis-cluster.ts) against real clusters: it forms, keys land where
 * CRC16 says, a slot moves with its keys, a master's death promotes its replica, and the dead node comes back.
 * Under CI=true nothing here skips (clusterSkipReason throws instead).
 */

const skip = clusterSkipReason()
const TIMEOUT = 120_000

/** An ioredis Cluster client over the harness's seeds, disconnected when the test ends; errors are collected. */
function clusterClient (t: TestContext, cluster: RedisCluster): Cluster & { errors: string[] } {
  const client = new Cluster(cluster.seeds.split(',').map((seed) => {
    const [host, port] = seed.split(':')
    return { host, port: Number(port) }
  }), { redisOptions: { connectionName: 'cluster-harness-test' } }) as Cluster & { errors: string[] }
  client.errors = []
  client.on('error', (err: Error) => { client.errors.push(err.message) })
  t.after(() => { client.disconnect() })
  return client
}

function owner (nodes: ClusterNode[], slot: number): ClusterNode | undefined {
  return nodes.find((n) => n.role === 'master' && n.slots.some(([a, b]) => slot >= a && slot <= b))
}

function countKeysInSlot (cluster: RedisCluster, port: number, slot: number): number {
  return Number(cluster.cli(port, 'CLUSTER', 'COUNTKEYSINSLOT', String(slot)).trim())
}

type Reply = string | number | null | Error | Reply[]

/**
 * A bare RESP2 connection to one node (no client library between the test and what the node sends): every
 * reply and push, in order of arrival.
 */
class RawConn {
  readonly replies: Reply[] = []
  private buf = Buffer.alloc(0)
  private waiters: Array<() => void> = []
  private constructor (readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk])
      for (;;) {
        const parsed = parseReply(this.buf, 0)
        if (parsed === undefined) break
        this.replies.push(parsed.value)
        this.buf = this.buf.subarray(parsed.end)
      }
      for (const w of this.waiters.splice(0)) w()
    })
    socket.on('error', () => {})
  }

  static async open (t: TestContext, port: number): Promise<RawConn> {
    const socket = connect(port, '127.0.0.1')
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    const conn = new RawConn(socket)
    t.after(() => { socket.destroy() })
    return conn
  }

  send (...args: string[]): void {
    this.socket.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''))
  }

  /** Waits until a reply satisfies `predicate` and returns it. */
  async next (predicate: (r: Reply) => boolean, what: string, timeoutMs = 10_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.replies.find(predicate)
      if (found !== undefined) return found
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.replies)}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }
}

function parseReply (buf: Buffer, at: number): { value: Reply, end: number } | undefined {
  const eol = buf.indexOf('\r\n', at)
  if (eol === -1) return undefined
  const line = buf.toString('utf8', at + 1, eol)
  switch (String.fromCharCode(buf[at])) {
    case '+': return { value: line, end: eol + 2 }
    case '-': return { value: new Error(line), end: eol + 2 }
    case ':': return { value: Number(line), end: eol + 2 }
    case '$': {
      const len = Number(line)
      if (len < 0) return { value: null, end: eol + 2 }
      if (buf.length < eol + 2 + len + 2) return undefined
      return { value: buf.toString('utf8', eol + 2, eol + 2 + len), end: eol + 2 + len + 2 }
    }
    case '*': {
      const items: Reply[] = []
      let end = eol + 2
      for (let i = 0; i < Number(line); i++) {
        const item = parseReply(buf, end)
        if (item === undefined) return undefined
        items.push(item.value)
        end = item.end
      }
      return { value: items, end }
    }
    default: throw new Error(`not RESP2: ${JSON.stringify(buf.toString('utf8', at, eol))}`)
  }
}

const isPush = (kind: string, channel: string, payload?: string | number) => (r: Reply): boolean =>
  Array.isArray(r) && r[0] === kind && r[1] === channel && (payload === undefined || r[2] === payload)

test('keySlot: CRC16-XMODEM and hash tags', () => {
  // The check value of CRC16/XMODEM is 0x31C3; Redis's own examples of hash tags.
  assert.equal(keySlot('123456789'), 0x31c3 % 16384)
  assert.equal(keySlot('{user1000}.following'), keySlot('{user1000}.followers'))
  assert.equal(keySlot('foo{{bar}}zap'), keySlot('{bar'))
  assert.equal(keySlot('foo{bar}{zap}'), keySlot('bar'))
  assert.equal(keySlot('herald-test:{orders.eu}:s'), keySlot('orders.eu'))
  assert.equal(keySlot(Buffer.from('herald-test:{orders.eu}:m')), keySlot('orders.eu'))
})

test('a cluster forms: 3 masters holding all 16384 slots, one replica each; keys land on the slot owner', { skip, timeout: TIMEOUT }, async (t) => {
  const started = Date.now()
  const cluster = await startRedisCluster(t)
  t.diagnostic(`cluster of 6 settled in ${Date.now() - started} ms on ports ${cluster.ports.join(', ')}`)

  assert.equal(cluster.ports.length, 6)
  assert.equal(new Set(cluster.ports).size, 6)
  assert.equal(cluster.seeds, cluster.ports.map((p) => `127.0.0.1:${p}`).join(','))
  for (const port of cluster.ports) assert.ok(port !== 6379 && port + 10000 !== 16379, 'never the machine\'s Redis')

  const nodes = await cluster.nodes()
  assert.equal(nodes.length, 6)
  const masters = nodes.filter((n) => n.role === 'master')
  const replicas = nodes.filter((n) => n.role === 'slave')
  assert.equal(masters.length, 3)
  assert.equal(replicas.length, 3)
  for (const n of nodes) {
    assert.ok(n.alive, `node ${n.port} is running`)
    assert.ok(n.pid > 0)
    process.kill(n.pid, 0) // throws if no such process
    assert.match(n.id, /^[0-9a-f]{40}$/)
    assert.ok(!n.flags.includes('fail') && !n.flags.includes('fail?'), `${n.port}: ${n.flags.join(',')}`)
  }
  // Every slot exactly once, across the masters.
  const covered = new Array<number>(16384).fill(0)
  for (const m of masters) for (const [a, b] of m.slots) for (let s = a; s <= b; s++) covered[s]++
  assert.ok(covered.every((c) => c === 1), 'each of the 16384 slots has exactly one master')
  // Each master has exactly one replica, and each replica follows a master.
  for (const m of masters) assert.equal(replicas.filter((r) => r.masterId === m.id).length, 1, `replicas of ${m.port}`)
  for (const r of replicas) assert.ok(masters.some((m) => m.id === r.masterId), `replica ${r.port} follows a master`)
  // Every node reports the cluster healthy, and says so through redis-cli.
  for (const port of cluster.ports) assert.match(cluster.cli(port, 'CLUSTER', 'INFO'), /cluster_state:ok/)
  assert.throws(() => cluster.cli(cluster.ports[0], 'NOSUCHCOMMAND'), /unknown command/i)
  assert.throws(() => cluster.cli(6379, 'PING'), /not a node of this cluster/)

  // The local CRC16 agrees with the nodes' own CLUSTER KEYSLOT, hash tags and all.
  const samples = ['', 'a', 'foo', 'foo{}{bar}', 'foo{{bar}}zap', 'foo{bar}{zap}', '{}', '{', '}', 'a{b}c', 'héllo wörld', '日本{語}',
    'herald-test:{room:42}:s', 'herald-test:{room:42}:i:abc', ...Array.from({ length: 40 }, (_, i) => `key:${i}:${i * 7919}`)]
  for (const key of samples) {
    assert.equal(cluster.slotOf(key), Number(cluster.cli(cluster.ports[0], 'CLUSTER', 'KEYSLOT', key).trim()), `slot of ${JSON.stringify(key)}`)
  }

  // Keys written through an ioredis Cluster client are stored on the master that slotOf + masterOf name.
  const client = clusterClient(t, cluster)
  const keys = Array.from({ length: 30 }, (_, i) => `harness:k${i}`)
  for (const key of keys) await client.set(key, `v-${key}`)
  const ownersSeen = new Set<number>()
  for (const key of keys) {
    const slot = cluster.slotOf(key)
    const master = await cluster.masterOf(slot)
    assert.equal(master.port, owner(nodes, slot)?.port)
    ownersSeen.add(master.port)
    assert.equal(cluster.cli(master.port, 'GET', key).trim(), `v-${key}`, `${key} (slot ${slot}) is on ${master.port}`)
    const other = masters.find((m) => m.port !== master.port)!
    assert.throws(() => cluster.cli(other.port, 'GET', key), /MOVED \d+ 127\.0\.0\.1:\d+/, 'any other master redirects')
  }
  assert.equal(ownersSeen.size, 3, 'thirty keys spread over all three masters')
  assert.deepEqual(client.errors, [])
})

test('moveSlot moves a slot with its keys (in batches, under concurrent writes), and back', { skip, timeout: TIMEOUT }, async (t) => {
  const cluster = await startRedisCluster(t)
  const client = clusterClient(t, cluster)
  const tag = '{harness-move}'
  const slot = cluster.slotOf(tag)
  // More keys than one GETKEYSINSLOT batch (100), of several types, one with a TTL; and one key in another slot.
  for (let i = 0; i < 260; i++) await client.set(`${tag}:${i}`, String(i))
  await client.hset(`${tag}:hash`, 'a', '1', 'b', '2')
  await client.rpush(`${tag}:list`, 'x', 'y')
  await client.set(`${tag}:ttl`, 'v', 'EX', 600)
  await client.set('elsewhere', 'e')
  assert.notEqual(cluster.slotOf('elsewhere'), slot)
  const before = await cluster.masterOf(slot)
  assert.equal(countKeysInSlot(cluster, before.port, slot), 263)

  // A writer keeps adding keys to the slot while it moves (ioredis follows ASK/MOVED).
  let writing = true
  let written = 0
  const writer = (async () => {
    while (writing) { await client.set(`${tag}:w${written}`, 'w'); written++ }
  })()
  const startedAt = Date.now()
  const { from, to, keys } = await cluster.moveSlot(slot)
  const tookMs = Date.now() - startedAt
  writing = false
  await writer
  t.diagnostic(`moveSlot of ${keys} keys (with ${written} concurrent writes) took ${tookMs} ms`)

  assert.equal(from.id, before.id)
  assert.notEqual(to.id, from.id)
  assert.equal(to.role, 'master')
  assert.ok(keys >= 263, `migrated ${keys} keys`)
  assert.equal((await cluster.masterOf(slot)).id, to.id)
  assert.deepEqual(from.slots.some(([a, b]) => slot >= a && slot <= b), false, 'the source no longer lists the slot')
  assert.equal(countKeysInSlot(cluster, from.port, slot), 0)
  assert.equal(countKeysInSlot(cluster, to.port, slot), 263 + written)
  for (const port of cluster.ports) assert.match(cluster.cli(port, 'CLUSTER', 'INFO'), /cluster_state:ok/)

  // Readable through the client that knew the old owner, and through a fresh one.
  const fresh = clusterClient(t, cluster)
  for (const c of [client, fresh]) {
    assert.equal(await c.get(`${tag}:0`), '0')
    assert.equal(await c.get(`${tag}:259`), '259')
    assert.deepEqual(await c.hgetall(`${tag}:hash`), { a: '1', b: '2' })
    assert.deepEqual(await c.lrange(`${tag}:list`, 0, -1), ['x', 'y'])
    const ttl = await c.ttl(`${tag}:ttl`)
    assert.ok(ttl > 500 && ttl <= 600, `TTL kept: ${ttl}`)
    if (written > 0) assert.equal(await c.get(`${tag}:w${written - 1}`), 'w')
    assert.equal(await c.get('elsewhere'), 'e')
  }
  assert.throws(() => cluster.cli(from.port, 'GET', `${tag}:0`), new RegExp(`MOVED ${slot} 127\\.0\\.0\\.1:${to.port}`))

  // Back to where it came from, by node id, stopping in the migration window: first with the slot
  // IMPORTING/MIGRATING and the keys still at the source, then with every key at the target but the slot not
  // yet handed over. An empty slot moves too.
  const seen: string[] = []
  const back = await cluster.moveSlot(slot, from.id, {
    migrating: (src, dst) => {
      seen.push('migrating')
      assert.deepEqual([src.id, dst.id], [to.id, from.id])
      assert.match(cluster.cli(src.port, 'CLUSTER', 'NODES'), new RegExp(`\\[${slot}->-${dst.id}\\]`))
      assert.match(cluster.cli(dst.port, 'CLUSTER', 'NODES'), new RegExp(`\\[${slot}-<-${src.id}\\]`))
      assert.equal(countKeysInSlot(cluster, src.port, slot), 263 + written)
    },
    keysMoved: async (src, dst) => {
      seen.push('keysMoved')
      assert.equal(countKeysInSlot(cluster, src.port, slot), 0)
      assert.equal(countKeysInSlot(cluster, dst.port, slot), 263 + written)
      assert.equal((await cluster.masterOf(slot)).id, src.id, 'the source still owns the slot')
      assert.throws(() => cluster.cli(src.port, 'GET', `${tag}:1`), new RegExp(`ASK ${slot} 127\\.0\\.0\\.1:${dst.port}`))
    }
  })
  assert.deepEqual(seen, ['migrating', 'keysMoved'])
  assert.equal(back.from.id, to.id)
  assert.equal(back.to.id, from.id)
  assert.equal((await cluster.masterOf(slot)).id, from.id)
  assert.equal(await client.get(`${tag}:42`), '42')
  const empty = cluster.slotOf('{nothing-here}')
  const moved = await cluster.moveSlot(empty)
  assert.equal(moved.keys, 0)
  assert.equal((await cluster.masterOf(empty)).id, moved.to.id)
  await assert.rejects(cluster.moveSlot(slot, from.id), /not a live master other than/)
  assert.deepEqual(client.errors, [])
})

test('failover promotes the replica and a Cluster client keeps working; restart brings the killed node back as a replica', { skip, timeout: TIMEOUT }, async (t) => {
  const cluster = await startRedisCluster(t)
  const client = clusterClient(t, cluster)
  const key = '{harness-failover}:k'
  const slot = cluster.slotOf(key)
  await client.set(key, 'before')
  const oldMaster = await cluster.masterOf(slot)
  const replica = (await cluster.nodes()).find((n) => n.masterId === oldMaster.id)!
  // The write has reached the replica before the master dies (WAIT on the connection that wrote it).
  const conn = client.nodes('master').find((n) => n.options.port === oldMaster.port)!
  assert.equal(await conn.wait(1, 10_000), 1)

  const startedAt = Date.now()
  const { killed, promoted } = await cluster.failover(slot)
  t.diagnostic(`failover took ${Date.now() - startedAt} ms (cluster-node-timeout 2000)`)
  assert.equal(killed.id, oldMaster.id)
  assert.equal(killed.port, oldMaster.port)
  assert.equal(promoted.id, replica.id, 'the replica of the killed master took over')
  assert.equal(promoted.role, 'master')
  assert.ok(promoted.slots.some(([a, b]) => slot >= a && slot <= b))
  assert.equal((await cluster.masterOf(slot)).id, promoted.id)
  assert.throws(() => process.kill(killed.pid, 0), 'the killed process is gone')
  const dead = (await cluster.nodes()).find((n) => n.id === killed.id)!
  assert.equal(dead.alive, false)
  assert.ok(dead.flags.includes('fail'), dead.flags.join(','))
  for (const port of cluster.ports.filter((p) => p !== killed.port)) assert.match(cluster.cli(port, 'CLUSTER', 'INFO'), /cluster_state:ok/)

  // The client that talked to the dead master finds the new one.
  assert.equal(await client.get(key), 'before')
  await client.set(key, 'after')
  assert.equal(cluster.cli(promoted.port, 'GET', key).trim(), 'after')
  await assert.rejects(cluster.failover(cluster.slotOf('{harness-failover}')), /no live replica/, 'the promoted master has no replica left')

  // The killed node comes back (same port, same nodes.conf) as a replica of the master that replaced it.
  await assert.rejects(cluster.restart(promoted.port), /still running/)
  const restartedAt = Date.now()
  await cluster.restart(killed.port)
  t.diagnostic(`restart and rejoin took ${Date.now() - restartedAt} ms`)
  const nodes = await cluster.nodes()
  const back = nodes.find((n) => n.port === killed.port)!
  assert.equal(back.id, killed.id, 'same node id (nodes.conf kept)')
  assert.equal(back.role, 'slave')
  assert.equal(back.masterId, promoted.id)
  assert.ok(back.alive && back.pid !== killed.pid)
  assert.ok(nodes.every((n) => n.alive && !n.flags.includes('fail') && !n.flags.includes('fail?')), JSON.stringify(nodes))
  assert.match(cluster.cli(back.port, 'INFO', 'replication'), /master_link_status:up/)
  for (const port of cluster.ports) assert.match(cluster.cli(port, 'CLUSTER', 'INFO'), /cluster_state:ok/)
  // It holds the data, replicated from the new master.
  const direct = new Redis({ host: '127.0.0.1', port: back.port, lazyConnect: true, maxRetriesPerRequest: 0 })
  t.after(() => { direct.disconnect() })
  await direct.connect()
  await direct.readonly()
  assert.equal(await direct.get(key), 'after')

  // And it can take over again: fail over the slot back to it.
  const again = await cluster.failover(slot)
  assert.equal(again.killed.id, promoted.id)
  assert.equal(again.promoted.id, killed.id)
  assert.equal(await client.get(key), 'after')
})

test('Redis 7 sharded pub/sub around a slot move, as the harness produces it (what the cluster bus must handle)', { skip, timeout: TIMEOUT }, async (t) => {
  const cluster = await startRedisCluster(t)
  const channel = 'herald-test:{harness-shard}'
  const slot = cluster.slotOf(channel)
  const owner = await cluster.masterOf(slot)
  const nodes = await cluster.nodes()
  const replica = nodes.find((n) => n.masterId === owner.id)!
  // A second channel of the same master, in another slot: it must survive the move of the first one.
  let other = ''
  for (let i = 0; other === ''; i++) {
    const c = `herald-test:{harness-stay-${i}}`
    if (cluster.slotOf(c) !== slot && (await cluster.masterOf(cluster.slotOf(c))).id === owner.id) other = c
  }

  const sub = await RawConn.open(t, owner.port)
  sub.send('SSUBSCRIBE', channel)
  sub.send('SSUBSCRIBE', other)
  await sub.next(isPush('ssubscribe', other, 2), 'two subscriptions')
  // A replica accepts SSUBSCRIBE for its master's slots (READONLY not needed) and gets the shard's messages.
  const onReplica = await RawConn.open(t, replica.port)
  onReplica.send('SSUBSCRIBE', channel)
  await onReplica.next(isPush('ssubscribe', channel, 1), 'subscription on the replica')
  // Any other master redirects.
  const elsewhere = await RawConn.open(t, nodes.find((n) => n.role === 'master' && n.id !== owner.id)!.port)
  elsewhere.send('SSUBSCRIBE', channel)
  const moved = await elsewhere.next((r) => r instanceof Error, 'MOVED') as Error
  assert.equal(moved.message, `MOVED ${slot} 127.0.0.1:${owner.port}`)

  // SPUBLISH from a script whose keys share the channel's slot: delivered on the master and on its replica;
  // the script gets the master's local receiver count.
  const script = "redis.call('HINCRBY', KEYS[1], 'o', 1); return redis.call('SPUBLISH', ARGV[1], ARGV[2])"
  assert.equal(cluster.cli(owner.port, 'EVAL', script, '1', 'herald-test:{harness-shard}:m', channel, 'from-lua').trim(), '1')
  await sub.next(isPush('smessage', channel, 'from-lua'), 'smessage on the master')
  await onReplica.next(isPush('smessage', channel, 'from-lua'), 'smessage on the replica')
  // A channel this node does not serve is refused inside a script like a foreign key.
  const foreign = 'herald-test:{' + [...Array(100).keys()].map((i) => `f${i}`).find((k) => !owner.slots.some(([a, b]) => cluster.slotOf(k) >= a && cluster.slotOf(k) <= b)) + '}'
  assert.throws(() => cluster.cli(owner.port, 'EVAL', "return redis.call('SPUBLISH', ARGV[1], 'x')", '0', foreign), /non local key/)

  // The move: the old owner (and its replica) push an unsolicited SUNSUBSCRIBE for the channel, whose count is
  // what the connection still has; the other channel stays, and the channel must be SSUBSCRIBEd at the new owner.
  const before = sub.replies.length
  const { to } = await cluster.moveSlot(slot)
  const pushed = await sub.next(isPush('sunsubscribe', channel), 'SUNSUBSCRIBE pushed by the old owner')
  assert.deepEqual(pushed, ['sunsubscribe', channel, 1])
  assert.deepEqual(await onReplica.next(isPush('sunsubscribe', channel), 'SUNSUBSCRIBE pushed by its replica'), ['sunsubscribe', channel, 0])
  assert.equal(sub.replies.slice(before).length, 1, 'nothing else was pushed: ' + JSON.stringify(sub.replies.slice(before)))
  assert.equal(cluster.cli(owner.port, 'SPUBLISH', other, 'still-here').trim(), '1')
  await sub.next(isPush('smessage', other, 'still-here'), 'the other channel still delivers')
  sub.send('SSUBSCRIBE', channel)
  const redirect = await sub.next((r) => r instanceof Error, 'MOVED on resubscribing at the old owner') as Error
  assert.equal(redirect.message, `MOVED ${slot} 127.0.0.1:${to.port}`)
  const atNew = await RawConn.open(t, to.port)
  atNew.send('SSUBSCRIBE', channel)
  await atNew.next(isPush('ssubscribe', channel, 1), 'subscription at the new owner')
  assert.equal(cluster.cli(to.port, 'SPUBLISH', channel, 'after-move').trim(), '1')
  await atNew.next(isPush('smessage', channel, 'after-move'), 'delivered at the new owner')
})

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { clusterSkipReason } from '../support/redis-cluster.js'
import { Publishers, type Subscriber, type TransportName } from '../support/cluster-load.js'
import { seededRandom, testSeed } from '../support/random.js'
import { checkShardChannels, pauseResumers, publishMore, resumeResumers, settle, startScenario, verify, waitFor, type Scenario } from './scenario.js'

/*
 * (c) A Herald node (C, a child process) is SIGKILLed and started again while the cluster is degraded: first while
 * a primary owning live channels is dead and its replica not yet promoted (the replica is held back with
 * cluster-replica-no-failover until C and its clients are back; the other two shards keep serving, as with
 * cluster-require-full-coverage no); then after the promotion, while the shard has no replica. Its clients
 * reconnect elsewhere and, once it is back, return to it and resume there. The other nodes, the publishers and the
 * subscribers go on throughout. Then the dead primary returns as a replica.
 */

const skip = clusterSkipReason()
const SEED = testSeed(0xc0de)

/** The clients whose home is C (of the given transports) go back to it (it is up again) and resume there. */
async function backHome (s: Scenario, transports: TransportName[] = ['websocket', 'sse', 'long-poll']): Promise<Subscriber[]> {
  const clients = s.subscribers.filter((x) => x.home === s.c && !s.resumers.includes(x) && transports.includes(x.transport))
  for (const x of clients) {
    await x.pause()
    await x.resume()
  }
  await waitFor(() => clients.every((x) => x.node === s.c) ? undefined : clients.filter((x) => x.node !== s.c).map((x) => `${x.name} on ${x.node?.name ?? 'none'}`).join(', '), 'C\'s clients are back on C', 30_000)
  return clients
}

test(`a Herald node SIGKILLed and restarted while the cluster is degraded, before and after a promotion (seed ${SEED})`, { skip, timeout: 600_000 }, async (t) => {
  const s = await startScenario(t, { seed: SEED })
  await publishMore(s, 300)
  await pauseResumers(s)

  const slot = s.slotOf(s.watched[0])
  const victim = await s.cluster.masterOf(slot)
  const replica = (await s.cluster.nodes()).find((n) => n.masterId === victim.id)!
  const onVictim = s.channels.filter((c) => victim.slots.some(([a, b]) => s.slotOf(c) >= a && s.slotOf(c) <= b))
  const refused = (): number => onVictim.reduce((n, c) => n + (s.publishers.answers.get(c)?.['503'] ?? 0), 0)
  // The other shards serve on while one is down; the replica waits for the test's word (however long that takes).
  for (const port of s.cluster.ports) s.cluster.cli(port, 'CONFIG', 'SET', 'cluster-require-full-coverage', 'no')
  s.cluster.cli(replica.port, 'CONFIG', 'SET', 'cluster-replica-no-failover', 'yes')
  s.cluster.cli(replica.port, 'CONFIG', 'SET', 'cluster-replica-validity-factor', '0')
  const killedAt = Date.now()
  await s.cluster.kill(victim.port)
  await waitFor(async () => (await s.cluster.nodes()).find((n) => n.id === victim.id)?.flags.includes('fail') === true ? undefined : 'not flagged fail yet',
    'the cluster flags the dead primary fail', 60_000)
  // 1. Before the promotion: C dies and comes back, on a cluster with a shard down. The publishers' workers soon all
  // wait on events of the dead shard (each is retried until acknowledged): one more keeps the live shards busy.
  const liveShardChannels = s.channels.filter((c) => !onVictim.includes(c))
  const extra = new Publishers({ ledger: s.ledger, nodes: () => s.nodes, channels: liveShardChannels, random: seededRandom(SEED + 1), pauseMs: 30 })
  t.after(async () => { await extra.abort() })
  extra.start(1)
  const refusedBefore = refused()
  await s.c.kill()
  await s.c.restart()
  // Its WebSocket client comes back to it at once and gets every channel of the live shards there; those of the
  // dead shard are refused (and asked for again). An SSE stream or a long-poll names every channel at once, so
  // C's come back after the promotion (meanwhile they retry, on any node).
  const wsC = s.subscribers.find((x) => x.home === s.c && x.transport === 'websocket' && !s.resumers.includes(x))!
  const mark = new Map(wsC.channels.map((c) => [c, wsC.timelines.get(c)!.length]))
  const errorsBefore = wsC.stats.subscribeErrors
  await backHome(s, ['websocket'])
  const liveShard = wsC.channels.filter((c) => !onVictim.includes(c))
  const onC = (c: string): boolean => wsC.timelines.get(c)!.slice(mark.get(c)).some((x) => x.t === 'subscribed' && x.node === 'C')
  await waitFor(() => {
    const missing = liveShard.filter((c) => !onC(c))
    return missing.length === 0 && wsC.stats.subscribeErrors > errorsBefore ? undefined : `not yet subscribed on C: ${missing.join(' ')}; ${wsC.stats.subscribeErrors - errorsBefore} refused`
  }, 'C, restarted while a shard is down, serves its WebSocket client every channel of the live shards and refuses the others', 60_000)
  // Meanwhile the other shards take publishes; the dead one's are refused (and retried with the same id).
  await waitFor(() => extra.stats.acked >= 50 && refused() >= refusedBefore + 5 ? undefined : `${extra.stats.acked} acknowledged, ${refused() - refusedBefore} refused on the dead shard`,
    'publishes acknowledged by the live shards and refused by the dead one', 60_000)
  assert.equal((await s.cluster.masterOf(slot)).id, victim.id, 'all this while the shard was still down')
  assert.ok(onVictim.filter((c) => wsC.channels.includes(c)).every((c) => !onC(c)), 'no channel of the dead shard was subscribed on C')
  s.figures.whileTheShardWasDown = {
    acknowledgedOnTheLiveShards: extra.stats.acked,
    refusedPublishesOnTheDeadShard: refused() - refusedBefore,
    refusedSubscribesOnC: wsC.stats.subscribeErrors - errorsBefore,
    channelsServedByC: liveShard.length
  }
  s.cluster.cli(replica.port, 'CONFIG', 'SET', 'cluster-replica-no-failover', 'no')
  await waitFor(async () => (await s.cluster.masterOf(slot)).id === replica.id ? undefined : 'not yet promoted', 'the replica is promoted', 60_000)
  await s.cluster.waitSettled('the promoted replica serves the slot')
  s.figures.shardDownMs = Date.now() - killedAt
  await extra.stop()
  assert.deepEqual([extra.stats.refused, extra.stats.abandoned], [[], []], 'every publish to the live shards was acknowledged')
  // The rest of C's clients come back to it.
  await backHome(s, ['sse', 'long-poll'])
  await publishMore(s, 150)

  // 2. After the promotion, the shard without a replica (its old primary still down): C dies and comes back again.
  await s.c.kill()
  await publishMore(s, 50)
  await s.c.restart()
  await backHome(s)
  const resumed = await resumeResumers(s)
  s.figures.resumedAcrossTheFaults = { recovered: resumed.filter((r) => r.recovered === true).length, notRecovered: resumed.filter((r) => r.recovered !== true).map((r) => `${r.name} ${r.channel} ${r.reason ?? ''}`) }
  await publishMore(s, 150)

  // 3. The dead primary returns, as the replica of the promoted one.
  await s.cluster.restart(victim.port)
  await publishMore(s, 100)
  s.figures.heraldNodeStarts = s.c.starts

  await settle(s)
  await verify(s, { allowLostAcks: true })
  assert.equal(s.c.up(), true, 'C is still running')
  await checkShardChannels(s)
})

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { clusterSkipReason } from '../support/redis-cluster.js'
import { testSeed } from '../support/random.js'
import { checkShardChannels, pauseResumers, publishMore, resumeResumers, settle, startScenario, verify, waitFor } from './scenario.js'

/*
 * (f) With REDIS_WAIT_REPLICAS=1 a publish is acknowledged only once a replica holds it. The replica of a primary
 * that owns live channels loses its link (publishes to that shard are stored on the primary alone, delivered live,
 * and answered 503: the publishers retry with the same id), then the primary dies and the replica is promoted.
 * No acknowledged event may be missing from history afterwards; clients that went offline before the fault resume
 * with every acknowledged event (or are told honestly that they cannot); live clients that saw the unacknowledged
 * events that died with the primary are told recovered: false.
 */

const skip = clusterSkipReason()
const SEED = testSeed(0x3a17)

test(`REDIS_WAIT_REPLICAS=1: a failover loses no acknowledged event from history (seed ${SEED})`, { skip, timeout: 600_000 }, async (t) => {
  const s = await startScenario(t, { seed: SEED, waitReplicas: 1 })
  await publishMore(s, 300)
  await pauseResumers(s)
  await publishMore(s, 50)

  const slot = s.slotOf(s.watched[0])
  const victim = await s.cluster.masterOf(slot)
  const replica = (await s.cluster.nodes()).find((n) => n.masterId === victim.id)!
  const onVictim: string[] = []
  for (const c of s.channels) if ((await s.cluster.masterOf(s.slotOf(c))).id === victim.id) onVictim.push(c)
  const refused = (): number => onVictim.reduce((n, c) => n + (s.publishers.answers.get(c)?.['503'] ?? 0), 0)
  const refusedBefore = refused()
  // The replica drops its link and cannot get back (the primary refuses the AUTH it now sends).
  s.cluster.cli(replica.port, 'CONFIG', 'SET', 'masterauth', 'lagging-on-purpose')
  s.cluster.cli(replica.port, 'CLIENT', 'KILL', 'TYPE', 'master')
  const ackedBefore = s.ledger.acks.length
  await waitFor(() => refused() - refusedBefore >= 9 ? undefined : `${refused() - refusedBefore} refused`, 'publishes to the shard refused with 503 (no replica holds them)', 60_000)
  const ackedOnShardWhileLagging = s.ledger.acks.slice(ackedBefore).filter((a) => onVictim.includes(a.channel) && !a.duplicate)
  s.figures.refusedWhileTheReplicaLagged = refused() - refusedBefore

  const startedAt = Date.now()
  const { killed, promoted } = await s.cluster.failover(slot)
  s.figures.failoverMs = Date.now() - startedAt
  assert.equal(promoted.id, replica.id)
  s.cluster.cli(promoted.port, 'CONFIG', 'SET', 'masterauth', '')
  // Until the old primary is back as its replica, the promoted one cannot confirm a publish either.
  await s.cluster.restart(killed.port)
  await publishMore(s, 300)
  const resumed = await resumeResumers(s)
  s.figures.resumedAfterTheFailover = { recovered: resumed.filter((r) => r.recovered === true).length, notRecovered: resumed.filter((r) => r.recovered !== true).map((r) => `${r.name} ${r.channel} ${r.reason ?? ''}`) }
  await publishMore(s, 100)

  await settle(s)
  // Every acknowledged event is in history (asserted by verify), and reached every subscriber or was covered.
  await verify(s, { allowLostAcks: false })
  // Nothing acknowledged was lost, and the resumers had seen only acknowledged (replicated) events: they recover.
  assert.deepEqual(resumed.filter((r) => r.recovered !== true).slice(0, 10), [], 'a resume from before the failover recovers every acknowledged event')
  s.t.diagnostic(`events acknowledged on the lagging shard before the failover (a replica of one of them would have been needed): ${ackedOnShardWhileLagging.length}`)
  await checkShardChannels(s)
})

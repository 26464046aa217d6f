import assert from 'node:assert/strict'
import { test } from 'node:test'
import { clusterSkipReason } from '../support/redis-cluster.js'
import { testSeed } from '../support/random.js'
import { readHistory } from './invariants.js'
import { checkShardChannels, pauseResumers, publishMore, resumeResumers, settle, snapshotHistory, startScenario, verify } from './scenario.js'

/*
 * (d) The whole cluster restarts empty under load (every node SIGKILLed, its data files deleted, started again with
 * its nodes.conf): every channel's stream is gone. Channels start again in new epochs from offset 1; every
 * subscriber — live on any transport, or offline and resuming later — is told recovered: false for every channel,
 * and never sees a silent gap or an offset that names two events.
 */

const skip = clusterSkipReason()
const SEED = testSeed(0xde1e7e)

test(`the whole cluster restarts empty under load: new epochs, recovered: false everywhere, never a gap (seed ${SEED})`, { skip, timeout: 600_000 }, async (t) => {
  const s = await startScenario(t, { seed: SEED })
  await publishMore(s, 300)
  await pauseResumers(s)
  await publishMore(s, 50)
  assert.deepEqual(await snapshotHistory(s, 'history before the restart'), [])
  const oldEpochs = new Map<string, Set<string>>()
  for (const a of s.ledger.acks) oldEpochs.set(a.channel, new Set([...(oldEpochs.get(a.channel) ?? []), a.epoch]))

  const startedAt = Date.now()
  await s.cluster.restartEmpty()
  s.figures.clusterRestartMs = Date.now() - startedAt
  const acksBefore = s.ledger.acks.length
  await publishMore(s, 300, 120_000)
  const resumed = await resumeResumers(s)
  s.figures.resumedAfterTheRestart = { recovered: resumed.filter((r) => r.recovered === true).length, notRecovered: resumed.filter((r) => r.recovered !== true).length }
  await publishMore(s, 100)

  await settle(s)
  // Every acknowledged event before the restart is gone from history: each subscriber got it, or was told —
  // except a reader that stood at a channel's empty position (no event yet) when it went offline: its position
  // names no epoch, so nothing can tell it that a stream came and went meanwhile (counted in the figures).
  await verify(s, { allowLostAcks: true })
  s.t.diagnostic(`acknowledged before / after the restart: ${acksBefore} / ${s.ledger.acks.length - acksBefore}`)

  for (const c of s.channels) {
    const { events } = await readHistory(s.a, c)
    const epochs = [...new Set(events.map((e) => e.epoch as string))]
    assert.equal(epochs.length, 1, `${c}: one epoch since the restart: ${epochs.join(' -> ')}`)
    assert.equal(events[0].offset, 1, `${c}: the new stream starts at 1`)
    assert.ok(!(oldEpochs.get(c)?.has(epochs[0]) ?? false), `${c}: a new epoch`)
  }
  // Whoever had an event of a stream that is gone was told so.
  for (const sub of s.subscribers) {
    for (const c of sub.channels) {
      const items = sub.timelines.get(c)!
      const firstOld = items.findIndex((x) => x.t === 'event' && oldEpochs.get(c)?.has(x.epoch) === true)
      if (firstOld === -1) continue
      const told = items.slice(firstOld).some((x) => x.t === 'recovery' || (x.t === 'subscribed' && x.recovered === false))
      assert.ok(told, `${sub.name} ${c}: told recovered: false`)
    }
  }
  for (const r of resumed) {
    const had = s.resumers.find((x) => x.name === r.name)!.timelines.get(r.channel)!.some((x) => x.t === 'event' && oldEpochs.get(r.channel)?.has(x.epoch) === true)
    if (had) assert.deepEqual([r.recovered, r.reason], [false, 'epoch_changed'], `${r.name} ${r.channel}`)
  }
  await checkShardChannels(s)
})

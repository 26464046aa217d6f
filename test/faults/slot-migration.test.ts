import assert from 'node:assert/strict'
import { test } from 'node:test'
import { publish, startHerald, token, WsClient } from '../helper.js'
import { answerCount, type Ack } from '../support/cluster-load.js'
import { clusterSkipReason, startRedisCluster, type ClusterNode } from '../support/redis-cluster.js'
import { testSeed } from '../support/random.js'
import { checkShardChannels, pauseResumers, publishMore, resumeResumers, settle, startScenario, verify, waitFor, type Scenario } from './scenario.js'

/*
 * (b) Slots holding live channels migrate between primaries (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT
 * NODE, as redis-cli --cluster reshard does) while publishers go on, and more events are published to the moving
 * channels inside the migration window: once the slot is MIGRATING with its keys still at the source, once with
 * every key at the target but the slot not yet handed over. Publishes with an idempotency key name a key that is
 * not in the slot yet, so Redis answers TRYAGAIN there (503, retried with the same id once the slot settled); those
 * without one run where the keys are — in the second window at the target, after an ASK, whose SPUBLISH reaches
 * none of the subscriptions still at the source: caught up from history. Then every slot goes back where it came
 * from. A migration copies the keys synchronously: no acknowledged event may be lost, no subscriber is ever told
 * recovered: false, and clients that were offline across both moves resume with every event. Then (e): the
 * sharded subscriptions follow the slots.
 */

const skip = clusterSkipReason()
const SEED = testSeed(0x5107)

/**
 * Publishes `n` events to `channel` with idempotency keys (retried until acknowledged, in the background) and
 * `unkeyed` without (sent once), and waits until each got an answer inside the window; returns the answers by status.
 */
async function publishInWindow (s: Scenario, channel: string, n: number, unkeyed: number, pending: Array<Promise<Ack | undefined>>): Promise<{ keyed: Record<string, number>, unkeyed: Record<string, number> }> {
  const before = { ...(s.publishers.answers.get(channel) ?? {}) }
  const base = answerCount(s.publishers, channel)
  for (let i = 0; i < n; i++) pending.push(s.publishers.publish(channel))
  const once = await Promise.all(Array.from({ length: unkeyed }, async () => await s.publishers.publishOnce(channel)))
  await waitFor(() => answerCount(s.publishers, channel) >= base + n + unkeyed ? undefined : `${answerCount(s.publishers, channel) - base - unkeyed} of ${n} answered`, `${n} publishes to ${channel} answered inside the migration window`, 30_000)
  const after = s.publishers.answers.get(channel) ?? {}
  const all = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]))
  const acked = once.filter((a) => a !== undefined).length
  all['201'] = (all['201'] ?? 0) - acked
  if (unkeyed - acked > 0) all['503'] = (all['503'] ?? 0) - (unkeyed - acked)
  const positive = (r: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(r).filter(([, v]) => v > 0))
  return { keyed: positive(all), unkeyed: positive({ 201: acked, other: unkeyed - acked }) }
}

test(`slots of live channels migrate away and back under load, with publishes inside the migration window (seed ${SEED})`, { skip, timeout: 600_000 }, async (t) => {
  const s = await startScenario(t, { seed: SEED })
  await publishMore(s, 300)
  await pauseResumers(s)
  await publishMore(s, 50)

  // One watched channel per primary, and one unwatched channel.
  const moving: Array<{ channel: string, owner: ClusterNode }> = []
  for (const c of s.watched) {
    const owner = await s.cluster.masterOf(s.slotOf(c))
    if (!moving.some((m) => m.owner.id === owner.id)) moving.push({ channel: c, owner })
  }
  const quiet = s.channels.find((c) => !s.watched.includes(c))!
  moving.push({ channel: quiet, owner: await s.cluster.masterOf(s.slotOf(quiet)) })
  const pending: Array<Promise<Ack | undefined>> = []
  const window: Record<string, Record<string, number>> = {}
  const tally = (phase: string, answers: { keyed: Record<string, number>, unkeyed: Record<string, number> }): void => {
    for (const [kind, counts] of Object.entries(answers)) {
      const into = (window[`${phase} ${kind}`] ??= {})
      for (const [k, v] of Object.entries(counts)) into[k] = (into[k] ?? 0) + v
    }
  }
  const moves: string[] = []
  let keysMoved = 0
  for (const round of ['away', 'back'] as const) {
    for (const { channel, owner } of moving) {
      const startedAt = Date.now()
      const { from, to, keys } = await s.cluster.moveSlot(s.slotOf(channel), round === 'back' ? owner.id : undefined, {
        migrating: async () => { tally('migrating', await publishInWindow(s, channel, 5, 2, pending)) },
        keysMoved: async () => { tally('keysMoved', await publishInWindow(s, channel, 5, 2, pending)) }
      })
      moves.push(`${channel} ${from.port}->${to.port} ${keys} keys ${Date.now() - startedAt} ms`)
      keysMoved += keys
      if (round === 'back') assert.equal(to.id, owner.id)
      await publishMore(s, 50)
    }
  }
  const inWindow = await Promise.all(pending)
  s.figures.slotMoves = moves
  s.figures.keysMigrated = keysMoved
  s.figures.answersToPublishesInsideMigrationWindows = window
  assert.ok(inWindow.every((a) => a !== undefined), 'every event published inside a migration window was acknowledged in the end')

  const resumed = await resumeResumers(s)
  s.figures.resumedAfterTheMoves = {
    recovered: resumed.filter((r) => r.recovered === true).length,
    notRecovered: resumed.filter((r) => r.recovered !== true).map((r) => `${r.name} ${r.channel} ${r.reason ?? ''}`)
  }
  s.figures.unkeyedPublishesInsideMigrationWindows = s.publishers.stats.unkeyed
  await publishMore(s, 100)
  await settle(s)
  // No acknowledged event may be lost, and nothing was: no one may be told recovered: false.
  await verify(s, { allowLostAcks: false })
  assert.deepEqual(resumed.filter((r) => r.recovered !== true), [], 'every resume across the moves recovered')
  assert.deepEqual(s.figures.recoveredFalse, { websocket: 0, sse: 0, 'long-poll': 0 }, 'no subscriber was told recovered: false')
  await checkShardChannels(s)
})

test('a client offline across two moves of its channel\'s slot resumes with every event (a migration loses nothing)', { skip, timeout: 600_000 }, async (t) => {
  const cluster = await startRedisCluster(t, { primaries: 3, replicasPerPrimary: 0 })
  const node = await startHerald(t, { config: { redisCluster: cluster.seeds.split(','), redisPrefix: 'hm' } })
  const ch = 'mv:one'
  const slot = cluster.slotOf(`hm:{${ch}}`)
  const acks: Array<{ offset: number, epoch: string }> = []
  const send = async (i: number): Promise<void> => {
    const res = await publish(node.url, ch, { i }, { id: `m${i}` })
    assert.equal(res.status, 201, JSON.stringify(res.body))
    acks.push(res.body as { offset: number, epoch: string })
  }
  for (let i = 1; i <= 3; i++) await send(i)
  const seen = { offset: acks[2].offset, epoch: acks[2].epoch } // where a client stood when it went offline
  const resume = async (): Promise<{ recovered: boolean, reason?: string, offsets: number[] }> => {
    const ws = await WsClient.connect(node.wsUrl)
    try {
      const sub = await ws.subscribe(ch, seen)
      const offsets = sub.recovered === true ? (await ws.events(ch, acks.length - seen.offset)).map((e) => e.offset as number) : []
      return { recovered: sub.recovered as boolean, reason: sub.reason as string | undefined, offsets }
    } finally {
      ws.close()
    }
  }

  const owner = await cluster.masterOf(slot)
  await cluster.moveSlot(slot)
  await send(4)
  assert.notEqual(acks[3].epoch, seen.epoch, 'the keys live on another Redis now: a new epoch, in line')
  assert.deepEqual(await resume(), { recovered: true, reason: undefined, offsets: [4] }, 'after one move: resumed')

  await cluster.moveSlot(slot, owner.id)
  await send(5)
  const history = await (await fetch(`${node.url}/v1/channels/${ch}/events?since=0`, { headers: { authorization: `Bearer ${token()}` } })).json() as { events: Array<{ offset: number, epoch: string }> }
  t.diagnostic(`history after two moves: ${history.events.map((e) => `${e.epoch}:${e.offset}`).join(' ')}`)
  assert.deepEqual(history.events.map((e) => e.offset), [1, 2, 3, 4, 5], 'history holds every event')
  assert.deepEqual(await resume(), { recovered: true, reason: undefined, offsets: [4, 5] }, 'after two moves: nothing was lost, so the resume recovers')
})

import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import { sleep } from '../helper.js'
import {
  dataId, describeChannel, inProcessNode, Ledger, PollSubscriber, ProcessNode, Publishers, SseSubscriber, WsSubscriber,
  type Ack, type HeraldNode, type Subscriber, type TransportName
} from '../support/cluster-load.js'
import { seededRandom } from '../support/random.js'
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.js'
import { catchUps, checkDelivery, readHistory, shardChannelProblem } from './invariants.js'

/*
 * The common shape of the fault scenarios: a Redis Cluster of 3 primaries with a replica each; Herald nodes A and B
 * in this process and C as a child process (which can be SIGKILLed); on each node a WebSocket, an SSE and a
 * long-poll subscriber of every watched channel; REST publishers to random nodes over watched and unwatched
 * channels. A scenario publishes, injects its fault, publishes on, then settles (a barrier event per channel that
 * every subscriber must reach) and verifies the invariants (invariants.ts) and the cluster's sharded subscriptions.
 */

export interface ScenarioOptions {
  seed: number
  /** REDIS_WAIT_REPLICAS for every node */
  waitReplicas?: number
  /** Channels with subscribers (default 40) and without (default 8) */
  watched?: number
  unwatched?: number
  /** Concurrent publishers (default 3), each pausing up to pauseMs (default 30) between events */
  publishers?: number
  pauseMs?: number
}

export interface Scenario {
  t: TestContext
  cluster: RedisCluster
  prefix: string
  /** Every channel published to; `watched` are those with subscribers */
  channels: string[]
  watched: string[]
  a: HeraldNode
  b: HeraldNode
  c: ProcessNode
  nodes: HeraldNode[]
  ledger: Ledger
  publishers: Publishers
  /** Every subscriber; `resumers` (also in it) are those a scenario takes offline before a fault and back after */
  subscribers: Subscriber[]
  resumers: Subscriber[]
  random: () => number
  /** Figures for the report, printed by verify() */
  figures: Record<string, unknown>
  /** The hash slot of a channel's keys and sharded pub/sub channel */
  slotOf: (channel: string) => number
}

const PREFIX = 'hf'

/** Waits until `check` returns undefined (nothing wrong); fails with the last thing it said after `timeoutMs`. */
export async function waitFor (check: () => Promise<string | undefined> | string | undefined, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: string | undefined
  for (;;) {
    try {
      last = await check()
    } catch (err) {
      last = (err as Error).message
    }
    if (last === undefined) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}; last: ${last}`)
    await sleep(100)
  }
}

export async function startScenario (t: TestContext, o: ScenarioOptions): Promise<Scenario> {
  // Teardown in reverse order of start-up, after the clients and publishers have stopped (t.after runs in order).
  const late: Array<() => unknown> = []
  const owned = { after: (fn: () => unknown) => { late.push(fn) } } as unknown as TestContext
  const running: { publishers?: Publishers, subscribers: Subscriber[] } = { subscribers: [] }
  t.after(async () => {
    await running.publishers?.abort()
    await Promise.all(running.subscribers.map(async (s) => await s.stop()))
    for (const fn of late.reverse()) await fn()
  })

  const cluster = await startRedisCluster(owned, { primaries: 3, replicasPerPrimary: 1 })
  const slotOf = (channel: string): number => cluster.slotOf(`${PREFIX}:{${channel}}`)
  const watched = Array.from({ length: o.watched ?? 40 }, (_, i) => `ld:w${i}`)
  const unwatched = Array.from({ length: o.unwatched ?? 8 }, (_, i) => `ld:u${i}`)
  const channels = [...watched, ...unwatched]
  const perMaster = new Map<number, number>()
  for (const c of watched) {
    const port = (await cluster.masterOf(slotOf(c))).port
    perMaster.set(port, (perMaster.get(port) ?? 0) + 1)
  }
  assert.equal(perMaster.size, 3, 'the watched channels spread over the three primaries')
  for (const [port, n] of perMaster) assert.ok(n >= 5, `primary ${port} owns ${n} watched channels`)

  const settings = { seeds: cluster.seeds, prefix: PREFIX, waitReplicas: o.waitReplicas }
  const a = await inProcessNode(owned, 'A', settings)
  const b = await inProcessNode(owned, 'B', settings)
  const c = await ProcessNode.start(owned, 'C', settings)
  const nodes: HeraldNode[] = [a, b, c]
  const ledger = new Ledger()
  const everyNode = (): HeraldNode[] => nodes
  const subscribers: Subscriber[] = []
  for (const node of nodes) {
    subscribers.push(new WsSubscriber(`ws-${node.name}`, watched, node, everyNode, ledger))
    subscribers.push(new SseSubscriber(`sse-${node.name}`, watched, node, everyNode, ledger))
    subscribers.push(new PollSubscriber(`poll-${node.name}`, watched, node, everyNode, ledger))
  }
  // One more client per transport, to go offline and resume (on another node) across a fault.
  const resumers = [
    new WsSubscriber('ws-resumer', watched, a, everyNode, ledger),
    new SseSubscriber('sse-resumer', watched, b, everyNode, ledger),
    new PollSubscriber('poll-resumer', watched, c, everyNode, ledger)
  ]
  subscribers.push(...resumers)
  running.subscribers = subscribers
  await Promise.all(subscribers.map(async (s) => await s.start()))
  await waitFor(() => {
    const pending = subscribers.filter((s) => !s.subscribedAll).map((s) => s.name)
    return pending.length === 0 ? undefined : `not yet subscribed everywhere: ${pending.join(', ')}`
  }, 'every subscriber subscribed to every watched channel', 30_000)

  const random = seededRandom(o.seed)
  const publishers = new Publishers({ ledger, nodes: everyNode, channels, random, pauseMs: o.pauseMs ?? 30 })
  running.publishers = publishers
  publishers.start(o.publishers ?? 3)
  return { t, cluster, prefix: PREFIX, channels, watched, a, b, c, nodes, ledger, publishers, subscribers, resumers, random, figures: {}, slotOf }
}

/** Takes the resumers offline (they keep their positions). */
export async function pauseResumers (s: Scenario): Promise<void> {
  await Promise.all(s.resumers.map(async (r) => await r.pause()))
}

/**
 * Brings the resumers back, each on the next node of A, B, C after the one it left (home first while that is
 * up), and waits until each has its `subscribed` answer for every channel; returns those answers.
 */
export async function resumeResumers (s: Scenario): Promise<Array<{ name: string, channel: string, recovered?: boolean, reason?: string }>> {
  const marks = s.resumers.map((r) => new Map(r.channels.map((c) => [c, r.timelines.get(c)!.length])))
  await Promise.all(s.resumers.map(async (r) => await r.resume(s.nodes[(s.nodes.indexOf(r.home) + 1) % s.nodes.length])))
  const answers = (): Array<{ name: string, channel: string, recovered?: boolean, reason?: string }> => s.resumers.flatMap((r, i) => r.channels.flatMap((c) => {
    const item = r.timelines.get(c)!.slice(marks[i].get(c)).find((x) => x.t === 'subscribed' || x.t === 'recovery')
    if (item === undefined) return []
    return [item.t === 'recovery' ? { name: r.name, channel: c, recovered: false, reason: item.reason } : { name: r.name, channel: c, recovered: item.recovered, reason: item.reason }]
  }))
  // A long-poll resume says nothing when it recovers: its first answer after the resume is the sign.
  const polled = new Map(s.resumers.map((r) => [r, r instanceof PollSubscriber ? r.polls : 0]))
  await waitFor(() => {
    const n = answers().length
    const pollsDone = s.resumers.every((r) => !(r instanceof PollSubscriber) || r.polls > polled.get(r)!)
    const expected = s.resumers.filter((r) => !(r instanceof PollSubscriber)).reduce((k, r) => k + r.channels.length, 0)
    return pollsDone && n >= expected ? undefined : `${n} of ${expected} resubscriptions answered; polls done: ${String(pollsDone)}`
  }, 'the resumers resubscribed everywhere', 60_000)
  const out = answers()
  for (const r of s.resumers) {
    if (!(r instanceof PollSubscriber)) continue
    for (const c of r.channels) if (!out.some((x) => x.name === r.name && x.channel === c)) out.push({ name: r.name, channel: c, recovered: true })
  }
  return out
}

/** Waits until `more` further events have been acknowledged (the publishers keep going). */
export async function publishMore (s: Scenario, more: number, timeoutMs = 60_000): Promise<void> {
  const target = s.publishers.stats.acked + more
  await waitFor(() => s.publishers.stats.acked >= target ? undefined : `${s.publishers.stats.acked} of ${target} acknowledged`, `${more} more acknowledged events`, timeoutMs)
}

/** A watched channel whose slot the given primary owns (the first, in the order of `watched`). */
export async function watchedOn (s: Scenario, port: number, skip = 0): Promise<string> {
  let seen = 0
  for (const c of s.watched) {
    if ((await s.cluster.masterOf(s.slotOf(c))).port === port && seen++ === skip) return c
  }
  throw new Error(`no watched channel on ${port}`)
}

/** Reads every channel's history into the ledger (events, and where one epoch goes on from another). */
export async function snapshotHistory (s: Scenario, label: string): Promise<string[]> {
  const problems: string[] = []
  const node = s.nodes.find((n) => n.up())!
  for (const c of s.channels) problems.push(...s.ledger.noteHistory(c, (await readHistory(node, c)).events, label))
  return problems
}

/**
 * The quiet period: publishers stop, one barrier event per channel is acknowledged, and every subscriber must
 * reach every barrier of its channels — the final acknowledged top.
 */
export async function settle (s: Scenario, timeoutMs = 90_000): Promise<void> {
  await s.publishers.stop()
  const barriers = new Map<string, Ack>()
  await Promise.all(s.channels.map(async (c) => {
    const ack = await s.publishers.publish(c)
    if (ack !== undefined) barriers.set(c, ack)
  }))
  assert.equal(barriers.size, s.channels.length, 'every channel took its barrier event')
  const started = Date.now()
  await waitFor(() => {
    const behind: string[] = []
    for (const sub of s.subscribers) {
      for (const c of sub.channels) {
        const b = barriers.get(c)!
        const p = sub.positions.get(c)
        if (p?.offset === b.offset && p.epoch === b.epoch) continue
        if (behind.length < 6) behind.push(`${sub.name} ${c} at ${p?.epoch ?? '-'}:${p?.offset ?? '-'} (barrier ${b.epoch}:${b.offset}; on ${sub.node?.name ?? 'no node'}; last items ${JSON.stringify(sub.timelines.get(c)!.slice(-3))})`)
        else return behind.join('\n  ') + '\n  …'
      }
    }
    return behind.length === 0 ? undefined : behind.join('\n  ')
  }, 'every subscriber reaches the barrier of every channel (the final acknowledged top)', timeoutMs)
  s.figures.quietPeriodMs = Date.now() - started
}

/**
 * Invariant (e), while every client is still connected: each watched channel is subscribed (SSUBSCRIBE) on the
 * primary that owns its slot, by one connection per Herald node that has subscribers of it, and nothing else is
 * subscribed anywhere (replicas: nothing; Herald's internal channels only where their slot is). Then, once every
 * client is gone, no channel at all.
 */
export async function checkShardChannels (s: Scenario): Promise<void> {
  const expected = (): Map<string, number> => new Map(s.watched.map((c) => [c, new Set(s.subscribers.filter((x) => x.node !== undefined && x.channels.includes(c)).map((x) => x.node!.name)).size]))
  await waitFor(async () => await shardChannelProblem(s.cluster, s.prefix, expected()),
    'PUBSUB SHARDCHANNELS: every watched channel on the primary owning its slot, once per Herald node with subscribers; nothing else', 30_000)
  await Promise.all(s.subscribers.map(async (x) => await x.stop()))
  await waitFor(async () => await shardChannelProblem(s.cluster, s.prefix, new Map()), 'no sharded subscription left once every client is gone', 30_000)
}

function sum (subs: Subscriber[], f: (s: Subscriber) => number): Record<TransportName, number> {
  const out: Record<TransportName, number> = { websocket: 0, sse: 0, 'long-poll': 0 }
  for (const sub of subs) out[sub.transport] += f(sub)
  return out
}

/**
 * Invariants 1–3 over everything recorded, against the final history of every channel. `allowLostAcks`: an
 * acknowledged event that Redis itself lost (not in history after the fault; REDIS_WAIT_REPLICAS=0) may be
 * missing for a subscriber that never had it, with nothing said. `historyLoss`: acknowledged events may be gone
 * from history (default: as allowLostAcks); where they may not, every one must still be there. Prints the figures
 * first (t.diagnostic), then asserts.
 */
export async function verify (s: Scenario, opts: { allowLostAcks: boolean, historyLoss?: boolean }): Promise<void> {
  const historyProblems = await snapshotHistory(s, 'final history')
  const survivedKeys = new Set<string>()
  const node = s.nodes.find((n) => n.up())!
  for (const c of s.channels) for (const e of (await readHistory(node, c)).events) survivedKeys.add(`${c} ${e.epoch as string} ${e.offset as number} ${dataId(e)}`)
  const report = checkDelivery(s.ledger, s.subscribers, (ack) => survivedKeys.has(`${ack.channel} ${ack.epoch} ${ack.offset} ${ack.id}`), opts.allowLostAcks)
  const p = s.publishers.stats
  const f = s.figures
  f.eventsPublished = p.started
  f.acknowledged = p.acked
  f.duplicateAcks = p.duplicates
  f.publishRetries = p.retries
  f.publishAnswers = p.statuses
  f.delivered = sum(s.subscribers, (x) => x.stats.events)
  f.recoveredFalse = sum(s.subscribers, (x) => x.stats.recoveredFalse)
  f.resubscribeFrames = sum(s.subscribers, (x) => x.stats.resubscribes)
  f.clientReconnects = sum(s.subscribers, (x) => x.stats.reconnects)
  f.subscribeErrors = sum(s.subscribers, (x) => x.stats.subscribeErrors)
  f.gapsExcusedByRecoveredFalse = report.excused
  f.acksLostFromHistory = report.lostAcks.length
  f.acksLostAndNeverDelivered = report.lostAcksMissed
  f.catchUps = await catchUps(s.nodes)
  for (const [k, v] of Object.entries(f)) s.t.diagnostic(`${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
  s.t.diagnostic(`figures ${JSON.stringify(f)}`)

  if (report.violations.length > 0) {
    const seen = new Set<string>()
    for (const v of report.violations) {
      const [name, channel] = v.split(' ')
      const sub = s.subscribers.find((x) => x.name === name)
      if (sub === undefined || seen.has(`${name} ${channel}`) || seen.size >= 5) continue
      seen.add(`${name} ${channel}`)
      s.t.diagnostic(describeChannel(sub, channel.replace(/:$/, '')))
    }
  }
  assert.deepEqual(historyProblems, [], 'history itself has no hole and one lineage per epoch')
  assert.deepEqual(s.ledger.conflicts, [], 'invariant 3: no (channel, epoch, offset) names two events')
  assert.deepEqual(report.violations.slice(0, 40), [], `invariants 1 and 2: ${report.violations.length} violations`)
  assert.deepEqual(s.subscribers.flatMap((x) => x.problems), [], 'frames break no schema or protocol rule')
  assert.deepEqual(p.refused, [], 'no publish refused for anything but a temporary unavailability')
  assert.deepEqual(p.abandoned, [], 'every event was acknowledged within the retry bound')
  assert.deepEqual(Object.keys(p.statuses).filter((k) => !['201', '503', 'network'].includes(k)), [], `publish answers: ${JSON.stringify(p.statuses)}`)
  if (!(opts.historyLoss ?? opts.allowLostAcks)) assert.deepEqual(report.lostAcks.map((a) => `${a.channel} ${a.epoch}:${a.offset} ${a.id}`), [], 'no acknowledged event is missing from history')
}

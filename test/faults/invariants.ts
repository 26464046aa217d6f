import type { Frame } from '../helper.js'
import { token } from '../helper.js'
import { EMPTY, PollSubscriber, type Ack, type HeraldNode, type Ledger, type Position, type Subscriber } from '../support/cluster-load.js'
import type { RedisCluster } from '../support/redis-cluster.js'

/*
 * The invariants of the fault scenarios, checked over what the clients recorded (test/support/cluster-load.ts):
 *  1. per subscriber and channel, events come in offset order, each right after the one before (across an epoch
 *     that goes on in line from the one before, too), except where a recovered: false sits between them;
 *  2. every acknowledged event reaches every subscriber of its channel exactly once, unless a recovered: false of
 *     that subscriber covers it (or, where the scenario allows it, Redis itself lost it: not in history any more);
 *  3. no (channel, epoch, offset) is ever two different events (the ledger's conflicts).
 */

/** What a recovered: false skipped: the events after `before` up to and including `after`. */
export interface Window { before: Position, after: Position }

const MAX_PER_TIMELINE = 5

const show = (p: Position | undefined): string => p === undefined ? 'nothing' : `${p.epoch}:${p.offset}`

/** Invariant 1 for one subscriber's channel; also what its recovered: false signals skipped, and what it received. */
export function walk (ledger: Ledger, sub: Subscriber, channel: string): { violations: string[], windows: Window[], received: Map<string, number> } {
  const violations: string[] = []
  const windows: Window[] = []
  const received = new Map<string, number>()
  const say = (text: string): void => { if (violations.length < MAX_PER_TIMELINE) violations.push(`${sub.name} ${channel}: ${text}`) }
  let pos: Position | undefined
  // Long-polls have no unsubscribed frames: a poll always answers for every channel of its cursor.
  let live = sub.transport === 'long-poll'
  const items = sub.timelines.get(channel) ?? []
  for (const [i, item] of items.entries()) {
    if (item.t === 'subscribed' || item.t === 'recovery') {
      const at = { offset: item.offset, epoch: item.epoch }
      if (item.t === 'recovery' || item.recovered === false) {
        // Told to go on from the empty position (the stream was gone, no new one yet): what it skipped ends right
        // before the stream it goes on into, i.e. its next event.
        const next = at.epoch === EMPTY.epoch ? items.slice(i + 1).find((x) => x.t === 'event') : undefined
        windows.push({ before: pos ?? EMPTY, after: next?.t === 'event' ? { offset: next.offset - 1, epoch: next.epoch } : at })
        pos = at
      } else if (item.recovered === true) {
        if (pos === undefined || pos.offset !== item.offset) say(`resumed from ${show(pos)} but subscribed says offset ${item.offset}`)
      } else {
        if (pos !== undefined) say(`subscribed afresh at ${show(at)} while at ${show(pos)}`)
        pos = at
      }
      live = true
    } else if (item.t === 'unsubscribed') {
      live = false
    } else {
      const ev = { offset: item.offset, epoch: item.epoch }
      received.set(`${ev.epoch}:${ev.offset}`, (received.get(`${ev.epoch}:${ev.offset}`) ?? 0) + 1)
      if (!live) say(`event ${show(ev)} while not subscribed`)
      if (pos === undefined) say(`event ${show(ev)} before any subscribed`)
      else if (ev.offset !== pos.offset + 1) {
        say(ev.offset > pos.offset + 1 ? `silent gap: ${show(pos)} then ${show(ev)}` : `out of order or duplicate: ${show(pos)} then ${show(ev)}`)
      } else if (ev.epoch !== pos.epoch && !(pos.offset === 0 && pos.epoch === EMPTY.epoch)) {
        const line = ledger.lineOf(channel, ev.epoch)
        if (line === undefined || line.epoch !== pos.epoch || line.offset !== pos.offset) {
          say(`epoch change not in line: ${show(pos)} then ${show(ev)} (history has ${ev.epoch} going on from ${show(line)})`)
        }
      }
      pos = ev
    }
  }
  return { violations, windows, received }
}

export interface DeliveryReport {
  violations: string[]
  /** Acknowledged events a subscriber did not get, covered by its recovered: false */
  excused: number
  /** Acknowledged events that are not in history any more (Redis lost them) */
  lostAcks: Ack[]
  /** (subscriber, event) pairs of those that the subscriber never got, with nothing said */
  lostAcksMissed: number
}

/**
 * Invariants 1 and 2 over every subscriber (every subscriber was subscribed before the first publish, so each
 * must get every acknowledged event of its channels). `survived`: is this acknowledged event still in history.
 */
export function checkDelivery (ledger: Ledger, subs: Subscriber[], survived: (ack: Ack) => boolean, allowLostAcks: boolean): DeliveryReport {
  const report: DeliveryReport = { violations: [], excused: 0, lostAcks: ledger.acks.filter((a) => !survived(a)), lostAcksMissed: 0 }
  const acksOf = new Map<string, Ack[]>()
  for (const ack of ledger.acks) acksOf.set(ack.channel, [...(acksOf.get(ack.channel) ?? []), ack])
  for (const sub of subs) {
    for (const channel of sub.channels) {
      const { violations, windows, received } = walk(ledger, sub, channel)
      report.violations.push(...violations)
      let missing = 0
      for (const ack of acksOf.get(channel) ?? []) {
        const n = received.get(`${ack.epoch}:${ack.offset}`) ?? 0
        if (n === 1) continue
        if (n > 1) { report.violations.push(`${sub.name} ${channel}: acknowledged ${ack.epoch}:${ack.offset} (${ack.id}) received ${n} times`); continue }
        const at = { offset: ack.offset, epoch: ack.epoch }
        if (windows.some((w) => ledger.compare(channel, w.before, at) < 0 && ledger.compare(channel, at, w.after) <= 0)) { report.excused++; continue }
        if (!survived(ack)) {
          report.lostAcksMissed++
          if (allowLostAcks) continue
        }
        if (missing++ < MAX_PER_TIMELINE) {
          report.violations.push(`${sub.name} ${channel}: acknowledged ${ack.epoch}:${ack.offset} (${ack.id}${survived(ack) ? '' : ', lost from history'}) never received, and no recovered: false covers it`)
        }
      }
    }
    if (sub instanceof PollSubscriber) report.violations.push(...cursorViolations(ledger, sub))
  }
  return report
}

/**
 * A long-poll cursor may name a position differently from the events (after a resume in line, its epoch is the
 * current one, the offset one of the epoch before): fine when that epoch goes on, in line, from at or past it.
 */
function cursorViolations (ledger: Ledger, sub: PollSubscriber): string[] {
  const out: string[] = []
  for (const { channel, cursor, seen } of sub.cursorNotes.values()) {
    let ok = false
    if (cursor.offset === seen.offset) {
      for (let line = ledger.lineOf(channel, cursor.epoch), hops = 0; line !== undefined && hops < 10; line = ledger.lineOf(channel, line.epoch), hops++) {
        if (line.epoch === seen.epoch && seen.offset <= line.offset) { ok = true; break }
      }
    }
    if (!ok && out.length < MAX_PER_TIMELINE) out.push(`${sub.name} ${channel}: its cursor says ${show(cursor)} where the events it got end at ${show(seen)}`)
  }
  return out
}

// ---------------------------------------------------------------- Herald and Redis, read from outside

/** A channel's whole history through a node's REST route, page by page. */
export async function readHistory (node: HeraldNode, channel: string): Promise<{ top: Position, earliest: number, events: Frame[] }> {
  const events: Frame[] = []
  let since = 0
  for (let page = 0; page < 1000; page++) {
    const res = await fetch(`${node.url}/v1/channels/${encodeURIComponent(channel)}/events?since=${since}&limit=1000`, { headers: { authorization: `Bearer ${token({ sub: 'reader' })}` } })
    const body = await res.json() as { epoch: string, offset: number, earliest: number, events: Frame[] }
    if (res.status !== 200) throw new Error(`history of ${channel} on ${node.name}: ${res.status} ${JSON.stringify(body)}`)
    events.push(...body.events)
    const last = body.events.at(-1)
    if (last === undefined || last.offset >= body.offset) return { top: { offset: body.offset, epoch: body.epoch }, earliest: body.earliest, events }
    since = last.offset
  }
  throw new Error(`history of ${channel}: more than 1000 pages`)
}

/** Sums of Herald's catch-up counters over the nodes that answer (since each one started). */
export async function catchUps (nodes: HeraldNode[]): Promise<Record<string, number>> {
  const out: Record<string, number> = { gap: 0, reconnect: 0, position: 0, busReconnects: 0 }
  for (const node of nodes) {
    if (!node.up()) continue
    const text = await (await fetch(`${node.url}/metrics`)).text()
    for (const m of text.matchAll(/^herald_bus_catchups_total\{reason="(\w+)"\} (\d+)/gm)) out[m[1]] = (out[m[1]] ?? 0) + Number(m[2])
    for (const m of text.matchAll(/^herald_bus_reconnects_total (\d+)/gm)) out.busReconnects += Number(m[1])
  }
  return out
}

/**
 * What is wrong with the cluster's sharded subscriptions (PUBSUB SHARDCHANNELS on every live node), or undefined:
 * each channel of `expected` is subscribed on the primary that owns its slot (by `expected.get(channel)`
 * connections, when that is a number: one per Herald node with local subscribers), no other channel of the prefix
 * is subscribed anywhere, and replicas have none. Herald's own internal channels (`P:!…`, no channel name holds a
 * `!`) may be subscribed whatever the clients do, but only on the primary that owns their slot too.
 */
export async function shardChannelProblem (cluster: RedisCluster, prefix: string, expected: Map<string, number | undefined>): Promise<string | undefined> {
  const nodes = await cluster.nodes()
  const wanted = new Map([...expected].map(([channel, n]) => [`${prefix}:{${channel}}`, n]))
  const owns = (node: { slots: Array<[number, number]> }, name: string): boolean => node.slots.some(([a, b]) => cluster.slotOf(name) >= a && cluster.slotOf(name) <= b)
  for (const node of nodes) {
    if (!node.alive) continue
    const all = cluster.cli(node.port, 'PUBSUB', 'SHARDCHANNELS', `${prefix}:*`).split('\n').map((l) => l.trim()).filter(Boolean).sort()
    if (node.role === 'slave') {
      if (all.length > 0) return `replica ${node.port} has sharded subscriptions: ${all.join(' ')}`
      continue
    }
    const internal = all.filter((name) => name.startsWith(`${prefix}:!`))
    const misplaced = internal.filter((name) => !owns(node, name))
    if (misplaced.length > 0) return `primary ${node.port}: internal channels subscribed outside its slots: ${misplaced.join(' ')}`
    const listed = all.filter((name) => !internal.includes(name))
    const mine = [...wanted.keys()].filter((name) => owns(node, name)).sort()
    const extra = listed.filter((name) => !mine.includes(name))
    const absent = mine.filter((name) => !listed.includes(name))
    if (extra.length > 0 || absent.length > 0) {
      return `primary ${node.port}: ${extra.length > 0 ? `subscribed without cause (or not its slot): ${extra.join(' ')}; ` : ''}${absent.length > 0 ? `not subscribed though watched: ${absent.join(' ')}` : ''}`
    }
    for (const name of mine) {
      const want = wanted.get(name)
      if (want === undefined) continue
      const reply = cluster.cli(node.port, 'PUBSUB', 'SHARDNUMSUB', name).split('\n').map((l) => l.trim()).filter(Boolean)
      const count = Number(reply[1])
      if (count !== want) return `primary ${node.port}: ${name} has ${count} subscriber connections, expected ${want} (one per Herald node with subscribers)`
    }
  }
  return undefined
}

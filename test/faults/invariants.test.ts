import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Ledger, Subscriber, type HeraldNode, type Item } from '../support/cluster-load.js'
import { checkDelivery, walk } from './invariants.js'

/*
 * The checker of the fault scenarios, on made-up timelines: it must see a silent gap, a duplicate, an epoch change
 * that is not in line and an acknowledged event that never arrived — and must not see one where recovered: false
 * covers it, or where an epoch goes on in line. (A checker that finds nothing proves nothing.)
 */

const node: HeraldNode = { name: 'X', url: 'http://127.0.0.1:1', wsUrl: 'ws://127.0.0.1:1', up: () => false }

class Recorded extends Subscriber {
  constructor (ledger: Ledger, items: Item[], transport: 'websocket' | 'long-poll' = 'websocket') {
    super('s', transport, ['c'], node, () => [node], ledger)
    this.timelines.set('c', items)
  }

  async start (): Promise<void> {}
  async stop (): Promise<void> {}
  protected async restart (): Promise<void> {}
}

const sub = (offset: number, epoch: string, recovered?: boolean): Item => recovered === undefined ? { t: 'subscribed', offset, epoch, node: 'X' } : { t: 'subscribed', offset, epoch, recovered, node: 'X' }
const ev = (offset: number, epoch: string): Item => ({ t: 'event', offset, epoch, id: `${epoch}${offset}` })

function ledgerWith (acks: Array<[string, number]>): Ledger {
  const ledger = new Ledger()
  for (const [epoch, offset] of acks) ledger.noteAck({ channel: 'c', id: `${epoch}${offset}`, offset, epoch, duplicate: false })
  return ledger
}

test('invariant 1: consecutive offsets pass; a gap, a duplicate, an event while unsubscribed do not', () => {
  const ledger = ledgerWith([])
  assert.deepEqual(walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'A'), ev(3, 'A')]), 'c').violations, [])
  assert.match(walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(3, 'A')]), 'c').violations.join(), /silent gap: A:1 then A:3/)
  assert.match(walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'A'), ev(2, 'A')]), 'c').violations.join(), /duplicate: A:2 then A:2/)
  assert.match(walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), { t: 'unsubscribed', reason: 'x', resubscribe: true }, ev(2, 'A')]), 'c').violations.join(), /while not subscribed/)
  assert.match(walk(ledger, new Recorded(ledger, [ev(1, 'A')]), 'c').violations.join(), /before any subscribed/)
})

test('invariant 1: another epoch continues only in line (as history shows it), or after a recovered: false', () => {
  const ledger = ledgerWith([])
  assert.match(walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'B')]), 'c').violations.join(), /not in line/)
  assert.deepEqual(ledger.noteHistory('c', [
    { type: 'event', channel: 'c', offset: 1, epoch: 'A', data: { id: 'A1' } },
    { type: 'event', channel: 'c', offset: 2, epoch: 'B', data: { id: 'B2' } }
  ], 'history'), [])
  assert.deepEqual(walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'B')]), 'c').violations, [])
  // B goes on from A:1: a reader that saw A:2 (lost) cannot continue into B:3.
  assert.match(walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'A'), ev(3, 'B')]), 'c').violations.join(), /not in line/)
  const told = walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'A'), sub(4, 'B', false), ev(5, 'B')]), 'c')
  assert.deepEqual(told.violations, [])
  assert.deepEqual(told.windows, [{ before: { offset: 2, epoch: 'A' }, after: { offset: 4, epoch: 'B' } }])
  // A resume that claims to recover must continue from where the reader stood.
  assert.match(walk(ledger, new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), sub(3, 'A', true)]), 'c').violations.join(), /resumed from A:1/)
})

test('invariant 2: every acknowledged event once, unless a recovered: false covers it or (when allowed) Redis lost it', () => {
  const acks: Array<[string, number]> = [['A', 1], ['A', 2], ['A', 3], ['A', 4]]
  let ledger = ledgerWith(acks)
  const all = (): boolean => true
  assert.deepEqual(checkDelivery(ledger, [new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'A'), ev(3, 'A'), ev(4, 'A')])], all, false).violations, [])
  // Missing A:3 and A:4 at the end, nothing said.
  ledger = ledgerWith(acks)
  assert.match(checkDelivery(ledger, [new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'A')])], all, false).violations.join(), /A:3 \(A3\) never received/)
  // Covered by a recovered: false that jumped from A:1 to A:3.
  ledger = ledgerWith(acks)
  const covered = checkDelivery(ledger, [new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), sub(3, 'A', false), ev(4, 'A')])], all, false)
  assert.deepEqual(covered.violations, [])
  assert.equal(covered.excused, 2)
  // Told to go on from the empty position (the stream was wiped): everything before the next stream is covered.
  ledger = ledgerWith([...acks, ['B', 1]])
  const wiped = checkDelivery(ledger, [new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), sub(0, '0', false), ev(1, 'B')])], all, false)
  assert.deepEqual([wiped.violations, wiped.excused], [[], 3])
  // Lost by Redis (not in history): allowed only when the scenario says so.
  ledger = ledgerWith(acks)
  const lost = (a: { offset: number }): boolean => a.offset !== 4
  assert.match(checkDelivery(ledger, [new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'A'), ev(3, 'A')])], lost, false).violations.join(), /lost from history/)
  const allowed = checkDelivery(ledger, [new Recorded(ledger, [sub(0, '0'), ev(1, 'A'), ev(2, 'A'), ev(3, 'A')])], lost, true)
  assert.deepEqual([allowed.violations, allowed.lostAcks.length, allowed.lostAcksMissed], [[], 1, 1])
})

test('invariant 3: one place, two events is a conflict', () => {
  const ledger = new Ledger()
  ledger.note('c', 'A', 1, 'x', 'ack')
  ledger.note('c', 'A', 1, 'x', 'received')
  assert.deepEqual(ledger.conflicts, [])
  ledger.note('c', 'A', 1, 'y', 'history')
  assert.equal(ledger.conflicts.length, 1)
})

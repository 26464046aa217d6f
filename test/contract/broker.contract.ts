/**
 * The bus contract (src/bus/broker.ts) as a suite any implementation runs by supplying a factory
 * (test/contract/broker.test.ts runs it against the in-process MemoryBroker and the RedisBroker on a private
 * redis-server). Each subtest builds its own broker through the factory, so the subtests share no channels or state.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test, type TestContext } from 'node:test'
import { EMPTY_EPOCH, type Broker, type BrokerOptions, type Publication, type PublishResult } from '../../src/bus/broker.js'
import { sleep, until } from '../helper.js'

interface ContractOptions {
  historySize?: number
  ttlSeconds?: number
  metaTtlSeconds?: number
  idempotencyTtlSeconds?: number
}

/** Builds a connected broker that is closed when `t` ends. */
export type BrokerFactory = (t: TestContext, options: BrokerOptions) => Promise<Broker>

export function brokerOptions (o: ContractOptions = {}): BrokerOptions {
  return {
    history: { size: o.historySize ?? 5, ttlSeconds: o.ttlSeconds ?? 60, metaTtlSeconds: o.metaTtlSeconds ?? 300 },
    idempotencyTtlSeconds: o.idempotencyTtlSeconds ?? 60
  }
}

/** Records every publication the broker hands to its handler. */
export function recorder (broker: Broker): { pubs: Publication[], reconnects: number } {
  const rec = { pubs: [] as Publication[], reconnects: 0 }
  broker.setHandler({ onPublication: (pub) => { rec.pubs.push(pub) }, onReconnect: () => { rec.reconnects++ } })
  return rec
}

export function uid (): string { return randomBytes(4).toString('hex') }

/** Key order of an event frame, as documented on Publication.frame. */
const FRAME_KEYS = ['type', 'channel', 'offset', 'epoch', 'ts', 'data']
const FRAME_KEYS_WITH_EVENT = ['type', 'channel', 'offset', 'epoch', 'ts', 'event', 'data']

/** Publishes to a channel that is subscribed and waits until it is delivered: everything published before it has been delivered too. */
export async function barrier (broker: Broker, rec: { pubs: Publication[] }, channel: string): Promise<PublishResult> {
  const res = await broker.publish({ channel, data: 'barrier' })
  await until(() => rec.pubs.some((p) => p.channel === channel && p.offset === res.offset && p.epoch === res.epoch), `barrier ${channel}#${res.offset} delivered`, 3000)
  return res
}

async function expectHeraldError (promise: Promise<unknown>, code: string, statusCode: number): Promise<void> {
  await assert.rejects(promise, (err: any) => {
    assert.equal(err.code, code)
    assert.equal(err.statusCode, statusCode)
    return true
  })
}

export function brokerContract (name: string, factory: BrokerFactory, opts: { skip?: string } = {}): void {
  void test(`broker contract: ${name}`, { skip: opts.skip }, async (suite) => {
    await suite.test('offsets are 1,2,3… per channel, independent between channels, in one epoch', async (t) => {
      const broker = await factory(t, brokerOptions())
      assert.equal(broker.ready(), true)
      const a = `a-${uid()}`
      const b = `b-${uid()}`
      const results: PublishResult[] = []
      for (let i = 0; i < 3; i++) {
        results.push(await broker.publish({ channel: a, data: { i } }))
        if (i < 2) results.push(await broker.publish({ channel: b, data: { i } }))
      }
      const ofA = results.filter((r) => r.channel === a)
      const ofB = results.filter((r) => r.channel === b)
      assert.deepEqual(ofA.map((r) => r.offset), [1, 2, 3])
      assert.deepEqual(ofB.map((r) => r.offset), [1, 2])
      for (const r of results) assert.equal(r.duplicate, false)
      assert.equal(new Set(ofA.map((r) => r.epoch)).size, 1, 'one epoch for every publish of a channel')
      assert.equal(new Set(ofB.map((r) => r.epoch)).size, 1)
      assert.match(ofA[0].epoch, /^[A-Za-z0-9_-]{1,64}$/)
      const histA = await broker.history(a, { since: 0, limit: 10 })
      assert.deepEqual(histA.top, { offset: 3, epoch: ofA[0].epoch })
      const histB = await broker.history(b, { since: 0, limit: 10 })
      assert.deepEqual(histB.top, { offset: 2, epoch: ofB[0].epoch })
    })

    await suite.test('subscribers receive exactly the published results, in offset order; nothing for other channels or after unsubscribe', async (t) => {
      const broker = await factory(t, brokerOptions())
      const rec = recorder(broker)
      const ch = `live-${uid()}`
      const other = `other-${uid()}`
      const probe = `probe-${uid()}`
      await broker.subscribe(ch)
      await broker.subscribe(probe)
      const published: PublishResult[] = []
      for (let i = 1; i <= 5; i++) {
        published.push(await broker.publish({ channel: ch, data: { n: i } }))
        await broker.publish({ channel: other, data: { n: i } }) // never subscribed
      }
      await barrier(broker, rec, probe)
      const got = rec.pubs.filter((p) => p.channel === ch)
      assert.deepEqual(got.map((p) => ({ channel: p.channel, offset: p.offset, epoch: p.epoch })),
        published.map((r) => ({ channel: r.channel, offset: r.offset, epoch: r.epoch })))
      assert.deepEqual(got.map((p) => JSON.parse(p.frame).data.n), [1, 2, 3, 4, 5])
      assert.equal(rec.pubs.filter((p) => p.channel === other).length, 0, 'nothing delivered for a channel never subscribed')

      await broker.unsubscribe(ch)
      const before = rec.pubs.length
      const after = await broker.publish({ channel: ch, data: { n: 6 } })
      assert.equal(after.offset, 6)
      await barrier(broker, rec, probe)
      assert.deepEqual(rec.pubs.slice(before).map((p) => p.channel), [probe], 'nothing delivered after unsubscribe')

      // Subscribing again resumes live delivery with the next offset.
      await broker.subscribe(ch)
      const again = await broker.publish({ channel: ch, data: { n: 7 } })
      await until(() => rec.pubs.some((p) => p.channel === ch && p.offset === 7), 'delivery after re-subscribe', 3000)
      assert.equal(again.offset, 7)
      assert.equal(rec.pubs.filter((p) => p.channel === ch).length, 6)
    })

    await suite.test('the frame is the JSON event frame, the same live and in history', async (t) => {
      const broker = await factory(t, brokerOptions())
      const rec = recorder(broker)
      const ch = `room:x@y.z-1_${uid()}`
      await broker.subscribe(ch)
      const data = { text: 'quote " backslash \\ newline \n unicode é✓ \u2028', nested: [1, null, true, { deep: 'x' }], n: -1.5e-3 }
      const t0 = Date.now()
      const withEvent = await broker.publish({ channel: ch, data, event: 'msg.created' })
      const plain = await broker.publish({ channel: ch, data: 'just a string' })
      const t1 = Date.now()
      await until(() => rec.pubs.length >= 2, 'two publications delivered', 3000)
      const [p1, p2] = rec.pubs
      const f1 = JSON.parse(p1.frame)
      assert.deepEqual(Object.keys(f1), FRAME_KEYS_WITH_EVENT)
      assert.equal(f1.type, 'event')
      assert.equal(f1.channel, ch)
      assert.equal(f1.offset, withEvent.offset)
      assert.equal(f1.epoch, withEvent.epoch)
      assert.equal(f1.event, 'msg.created')
      assert.deepEqual(f1.data, data)
      assert.ok(Number.isInteger(f1.ts) && f1.ts >= t0 && f1.ts <= t1, `ts ${f1.ts} within [${t0}, ${t1}]`)
      assert.equal(p1.ts, f1.ts, 'Publication.ts is the frame ts')
      const f2 = JSON.parse(p2.frame)
      assert.deepEqual(Object.keys(f2), FRAME_KEYS, 'no "event" key when none was given')
      assert.equal(f2.offset, plain.offset)
      assert.equal(f2.data, 'just a string')
      assert.equal(p2.ts, f2.ts)
      const hist = await broker.history(ch, { since: 0, limit: 10 })
      assert.deepEqual(hist.publications.map((p) => p.frame), [p1.frame, p2.frame], 'history frames are byte-identical to live ones')
      assert.deepEqual(hist.publications.map((p) => [p.channel, p.offset, p.epoch, p.ts]), [p1, p2].map((p) => [p.channel, p.offset, p.epoch, p.ts]))
    })

    await suite.test('history: since / limit / earliest semantics', async (t) => {
      const broker = await factory(t, brokerOptions({ historySize: 5 }))
      const ch = `h-${uid()}`
      let epoch = ''
      for (let i = 1; i <= 5; i++) epoch = (await broker.publish({ channel: ch, data: i })).epoch
      const offsets = async (since: number, limit: number): Promise<number[]> =>
        (await broker.history(ch, { since, limit })).publications.map((p) => p.offset)

      const all = await broker.history(ch, { since: 0, limit: 100 })
      assert.deepEqual(all.publications.map((p) => p.offset), [1, 2, 3, 4, 5])
      assert.deepEqual(all.publications.map((p) => JSON.parse(p.frame).data), [1, 2, 3, 4, 5])
      for (const p of all.publications) { assert.equal(p.channel, ch); assert.equal(p.epoch, epoch) }
      assert.deepEqual(all.top, { offset: 5, epoch })
      assert.equal(all.earliest, 1)

      assert.deepEqual(await offsets(2, 100), [3, 4, 5], 'since in the middle: strictly after it')
      assert.deepEqual(await offsets(2, 2), [3, 4], 'limit caps from the oldest')
      assert.deepEqual(await offsets(0, 1), [1])
      assert.deepEqual(await offsets(4, 100), [5])

      const atTop = await broker.history(ch, { since: 5, limit: 100 })
      assert.deepEqual(atTop.publications, [], 'since = top: nothing')
      assert.deepEqual(atTop.top, { offset: 5, epoch })
      assert.equal(atTop.earliest, 1)

      const ahead = await broker.history(ch, { since: 9, limit: 100 })
      assert.deepEqual(ahead.publications, [], 'since beyond top: nothing')
      assert.deepEqual(ahead.top, { offset: 5, epoch })

      const position = await broker.history(ch, { since: 0, limit: 0 })
      assert.deepEqual(position.publications, [], 'limit 0: only the position')
      assert.deepEqual(position.top, { offset: 5, epoch })
      assert.equal(position.earliest, 1)
    })

    await suite.test('size cap trims the oldest and moves earliest up', async (t) => {
      const broker = await factory(t, brokerOptions({ historySize: 5 }))
      const ch = `cap-${uid()}`
      for (let i = 1; i <= 8; i++) await broker.publish({ channel: ch, data: i })
      const h = await broker.history(ch, { since: 0, limit: 100 })
      assert.deepEqual(h.publications.map((p) => p.offset), [4, 5, 6, 7, 8])
      assert.equal(h.earliest, 4)
      assert.equal(h.top.offset, 8)
      const fromTrimmed = await broker.history(ch, { since: 1, limit: 100 })
      assert.deepEqual(fromTrimmed.publications.map((p) => p.offset), [4, 5, 6, 7, 8], 'a since older than earliest starts at earliest')
      assert.equal(fromTrimmed.earliest, 4, 'earliest > since + 1 tells the reader history was trimmed')
      const mid = await broker.history(ch, { since: 6, limit: 100 })
      assert.deepEqual(mid.publications.map((p) => p.offset), [7, 8])
      await broker.publish({ channel: ch, data: 9 })
      const h2 = await broker.history(ch, { since: 0, limit: 100 })
      assert.deepEqual(h2.publications.map((p) => p.offset), [5, 6, 7, 8, 9])
      assert.equal(h2.earliest, 5)
    })

    await suite.test('age cap: history and idempotency keys expire; the offset counter and epoch continue', async (t) => {
      const broker = await factory(t, brokerOptions({ historySize: 5, ttlSeconds: 1, idempotencyTtlSeconds: 1 }))
      const ch = `ttl-${uid()}`
      const t0 = Date.now()
      const first = await broker.publish({ channel: ch, data: 1, idempotencyKey: 'k1' })
      await broker.publish({ channel: ch, data: 2 })
      const third = await broker.publish({ channel: ch, data: 3 })
      const published = Date.now()
      const fresh = await broker.history(ch, { since: 0, limit: 10 })
      assert.deepEqual(fresh.publications.map((p) => p.offset), [1, 2, 3], 'kept while younger than the TTL')
      await until(async () => (await broker.history(ch, { since: 0, limit: 10 })).publications.length === 0, 'history to expire', 3000)
      assert.ok(Date.now() - t0 >= 990, `history expired after ${Date.now() - t0} ms, before its 1 s TTL`)
      const expired = await broker.history(ch, { since: 0, limit: 10 })
      assert.deepEqual(expired.publications, [])
      assert.deepEqual(expired.top, { offset: 3, epoch: third.epoch }, 'the counter survives the history')
      assert.equal(expired.earliest, 4, 'empty history: earliest = top + 1')

      // The idempotency key has its own 1 s window (stored with the first publish): a retry is a
      // duplicate until it lapses, and then publishes again. Other content would be a 409, so the
      // retry repeats the first publish exactly.
      let next = await broker.publish({ channel: ch, data: 1, idempotencyKey: 'k1' })
      while (next.duplicate) {
        assert.ok(Date.now() - published < 10_000, 'the idempotency key never expired')
        await sleep(50) // pace of the retry
        next = await broker.publish({ channel: ch, data: 1, idempotencyKey: 'k1' })
      }
      assert.ok(Date.now() - t0 >= 990, 'the key outlived its 1 s window')
      assert.equal(next.duplicate, false, 'an expired idempotency key publishes again')
      assert.equal(next.offset, 4)
      assert.equal(next.epoch, first.epoch)
      const after = await broker.history(ch, { since: 0, limit: 10 })
      assert.deepEqual(after.publications.map((p) => p.offset), [4])
      assert.equal(after.earliest, 4)
      assert.deepEqual(after.top, { offset: 4, epoch: first.epoch })
    })

    await suite.test('idempotency: a retry returns the first result; other content under the same key is a 409 conflict', async (t) => {
      const broker = await factory(t, brokerOptions())
      const rec = recorder(broker)
      const ch = `idem-${uid()}`
      const otherCh = `idem2-${uid()}`
      await broker.subscribe(ch)
      const first = await broker.publish({ channel: ch, data: { amount: 10 }, event: 'pay', idempotencyKey: 'order-1' })
      assert.deepEqual(first, { channel: ch, offset: 1, epoch: first.epoch, duplicate: false })
      const retry = await broker.publish({ channel: ch, data: { amount: 10 }, event: 'pay', idempotencyKey: 'order-1' })
      assert.deepEqual(retry, { channel: ch, offset: 1, epoch: first.epoch, duplicate: true })
      await expectHeraldError(broker.publish({ channel: ch, data: { amount: 11 }, event: 'pay', idempotencyKey: 'order-1' }), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 409)
      await expectHeraldError(broker.publish({ channel: ch, data: { amount: 10 }, event: 'refund', idempotencyKey: 'order-1' }), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 409)
      await expectHeraldError(broker.publish({ channel: ch, data: { amount: 10 }, idempotencyKey: 'order-1' }), 'HERALD_ERR_IDEMPOTENCY_CONFLICT', 409)
      // Keys are per channel: the same key elsewhere is a new publish.
      const elsewhere = await broker.publish({ channel: otherCh, data: { amount: 10 }, event: 'pay', idempotencyKey: 'order-1' })
      assert.equal(elsewhere.duplicate, false)
      assert.equal(elsewhere.offset, 1)
      const next = await broker.publish({ channel: ch, data: { amount: 12 }, idempotencyKey: 'order-2' })
      assert.equal(next.offset, 2, 'neither the duplicate nor the conflicts used an offset')
      assert.equal(next.duplicate, false)
      await until(() => rec.pubs.some((p) => p.offset === 2), 'second publication delivered', 3000)
      assert.deepEqual(rec.pubs.map((p) => [p.channel, p.offset]), [[ch, 1], [ch, 2]], 'the duplicate was not delivered again')
      const h = await broker.history(ch, { since: 0, limit: 10 })
      assert.deepEqual(h.publications.map((p) => JSON.parse(p.frame).data.amount), [10, 12])
      // Still a duplicate after later publishes.
      const late = await broker.publish({ channel: ch, data: { amount: 10 }, event: 'pay', idempotencyKey: 'order-1' })
      assert.deepEqual(late, { channel: ch, offset: 1, epoch: first.epoch, duplicate: true })
    })

    await suite.test('reading a never-used channel creates nothing: the empty position, and the first publish starts the stream', async (t) => {
      const broker = await factory(t, brokerOptions())
      const ch = `fresh-${uid()}`
      const h = await broker.history(ch, { since: 0, limit: 10 })
      assert.deepEqual(h, { publications: [], top: { offset: 0, epoch: EMPTY_EPOCH }, earliest: 1 })
      assert.deepEqual(await broker.history(ch, { since: 0, limit: 0 }), h, 'reading again changes nothing')
      const pub = await broker.publish({ channel: ch, data: 'first' })
      assert.equal(pub.offset, 1)
      assert.match(pub.epoch, /^[A-Za-z0-9_-]{8}$/, 'a random epoch of its own')
      assert.notEqual(pub.epoch, EMPTY_EPOCH)
      const after = await broker.history(ch, { since: 0, limit: 10 })
      assert.deepEqual(after.top, { offset: 1, epoch: pub.epoch })
      assert.equal(after.earliest, 1, 'history starts at offset 1: a reader from the empty position misses nothing')
    })

    await suite.test('a page stops at about maxBytes of frames, and always holds at least one event', async (t) => {
      const broker = await factory(t, brokerOptions({ historySize: 50 }))
      const ch = `bytes-${uid()}`
      for (let i = 1; i <= 20; i++) await broker.publish({ channel: ch, data: 'x'.repeat(1000) })
      const frameSize = (await broker.history(ch, { since: 0, limit: 1 })).publications[0].frame.length
      const page = await broker.history(ch, { since: 0, limit: 20, maxBytes: frameSize * 5 + 10 })
      assert.deepEqual(page.publications.map((p) => p.offset), [1, 2, 3, 4, 5])
      assert.equal(page.top.offset, 20)
      const tiny = await broker.history(ch, { since: 7, limit: 20, maxBytes: 1 })
      assert.deepEqual(tiny.publications.map((p) => p.offset), [8])
    })

    await suite.test('200 concurrent publishes to one channel get offsets 1..200, once each, delivered in order', async (t) => {
      const broker = await factory(t, brokerOptions())
      const rec = recorder(broker)
      const ch = `race-${uid()}`
      await broker.subscribe(ch)
      const results = await Promise.all(Array.from({ length: 200 }, async (_, i) => await broker.publish({ channel: ch, data: { i } })))
      const offsets = results.map((r) => r.offset).sort((x, y) => x - y)
      assert.deepEqual(offsets, Array.from({ length: 200 }, (_, i) => i + 1))
      assert.equal(new Set(results.map((r) => r.epoch)).size, 1)
      await until(() => rec.pubs.length >= 200, '200 deliveries', 5000)
      assert.deepEqual(rec.pubs.map((p) => p.offset), Array.from({ length: 200 }, (_, i) => i + 1), 'delivered once each in offset order')
      // Each delivered frame carries the data of the publish that got that offset.
      const byOffset = new Map(results.map((r, i) => [r.offset, i]))
      for (const p of rec.pubs) assert.equal(JSON.parse(p.frame).data.i, byOffset.get(p.offset))
      const h = await broker.history(ch, { since: 0, limit: 0 })
      assert.equal(h.top.offset, 200)
    })

    await suite.test('control channel: a message reaches every subscriber, the sender too, and the count says how many', async (t) => {
      const broker = await factory(t, brokerOptions())
      if (broker.publishControl === undefined || broker.subscribeControl === undefined) return
      const got: string[] = []
      await broker.subscribeControl({ message: (m) => { got.push(m) }, missed: () => {} })
      const text = JSON.stringify({ hello: uid(), channel: 'not a channel' })
      assert.equal(await broker.publishControl(text), 1)
      await until(() => got.includes(text), 'the control message comes back', 3000)
      // Not a publication: no channel of the bus hears it.
      const rec = recorder(broker)
      const ch = `ctl-${uid()}`
      await broker.subscribe(ch)
      await broker.publishControl('second')
      await barrier(broker, rec, ch)
      await until(() => got.includes('second'), 'the second control message', 3000)
      assert.deepEqual(rec.pubs.map((p) => p.channel), [ch])
    })

    await suite.test('removeHistory drops the events and keeps the position: offsets go on, a resume from before is trimmed', async (t) => {
      const broker = await factory(t, brokerOptions())
      if (broker.removeHistory === undefined) return
      const ch = `rm-${uid()}`
      assert.deepEqual(await broker.removeHistory(ch), { offset: 0, epoch: EMPTY_EPOCH }, 'nothing to remove, nothing created')
      const first = await broker.publish({ channel: ch, data: 0 })
      for (let i = 1; i < 3; i++) await broker.publish({ channel: ch, data: i })
      assert.deepEqual(await broker.removeHistory(ch), { offset: 3, epoch: first.epoch })
      const h = await broker.history(ch, { since: 0, limit: 10 })
      assert.deepEqual([h.publications.length, h.top, h.earliest], [0, { offset: 3, epoch: first.epoch }, 4])
      const next = await broker.publish({ channel: ch, data: 'after' })
      assert.deepEqual([next.offset, next.epoch], [4, first.epoch])
      assert.deepEqual((await broker.history(ch, { since: 0, limit: 10 })).publications.map((p) => p.offset), [4])
    })
  })
}

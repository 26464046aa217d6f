/**
 * The presence store contract (src/presence/presence.ts) as a suite any implementation runs by supplying a factory
 * (test/contract/presence.test.ts runs it against MemoryPresence and RedisPresence on a private redis-server).
 * Every subtest builds its own store and uses channels of its own.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test, type TestContext } from 'node:test'
import type { PresenceChange, PresenceMember, PresenceStore } from '../../src/presence/presence.js'
import { until } from '../helper.js'

/** Builds a connected store that is closed when `t` ends. */
export type PresenceFactory = (t: TestContext) => Promise<PresenceStore>

export function uid (): string { return randomBytes(4).toString('hex') }

export function member (sub: string, client: string, info?: unknown): PresenceMember {
  return info === undefined ? { sub, client, connectedAt: 1_700_000_000_000 } : { sub, client, connectedAt: 1_700_000_000_000, info }
}

/** Records the changes the store announces for watched channels. */
export function changes (store: PresenceStore): PresenceChange[] {
  const seen: PresenceChange[] = []
  store.setHandler((c) => { seen.push(c) })
  return seen
}

const byClient = (a: PresenceMember, b: PresenceMember): number => a.client < b.client ? -1 : 1

export function presenceContract (name: string, factory: PresenceFactory, opts: { skip?: string } = {}): void {
  void test(`presence contract: ${name}`, { skip: opts.skip }, async (suite) => {
    await suite.test('a sub joins with its first connection and leaves with its last; counts follow', async (t) => {
      const store = await factory(t)
      const ch = `p-${uid()}`
      assert.deepEqual(await store.join(ch, member('alice', 'c1', { name: 'Alice' }), 0), { joined: true, full: false })
      assert.deepEqual(await store.join(ch, member('alice', 'c2', { name: 'Alice' }), 0), { joined: false, full: false })
      assert.deepEqual(await store.join(ch, member('bob', 'c3'), 0), { joined: true, full: false })
      assert.deepEqual(await store.count(ch), { members: 2, connections: 3 })
      assert.deepEqual((await store.list(ch)).sort(byClient), [member('alice', 'c1', { name: 'Alice' }), member('alice', 'c2', { name: 'Alice' }), member('bob', 'c3')])
      await store.leave(ch, member('alice', 'c1'))
      assert.deepEqual(await store.count(ch), { members: 2, connections: 2 })
      await store.leave(ch, member('alice', 'c2'))
      await store.leave(ch, member('bob', 'c3'))
      assert.deepEqual(await store.count(ch), { members: 0, connections: 0 })
      assert.deepEqual(await store.list(ch), [])
    })

    await suite.test('joining a connection twice changes nothing; leaving twice, or one never joined, is harmless', async (t) => {
      const store = await factory(t)
      const ch = `p-${uid()}`
      await store.join(ch, member('alice', 'c1'), 0)
      assert.deepEqual(await store.join(ch, member('alice', 'c1'), 0), { joined: false, full: false })
      assert.deepEqual(await store.count(ch), { members: 1, connections: 1 })
      await store.leave(ch, member('alice', 'c1'))
      await store.leave(ch, member('alice', 'c1'))
      await store.leave(ch, member('zed', 'never'))
      assert.deepEqual(await store.count(ch), { members: 0, connections: 0 })
    })

    await suite.test('maxMembers refuses a new sub once the channel has that many, never another connection of a member', async (t) => {
      const store = await factory(t)
      const ch = `p-${uid()}`
      await store.join(ch, member('a', 'a1'), 2)
      await store.join(ch, member('b', 'b1'), 2)
      assert.deepEqual(await store.join(ch, member('c', 'c1'), 2), { joined: false, full: true })
      assert.deepEqual(await store.join(ch, member('a', 'a2'), 2), { joined: false, full: false })
      assert.deepEqual(await store.count(ch), { members: 2, connections: 3 })
      await store.leave(ch, member('b', 'b1'))
      assert.deepEqual(await store.join(ch, member('c', 'c1'), 2), { joined: true, full: false }, 'a freed place is taken')
    })

    await suite.test('channels are independent', async (t) => {
      const store = await factory(t)
      const [x, y] = [`p-${uid()}`, `p-${uid()}`]
      await store.join(x, member('alice', 'c1'), 0)
      assert.deepEqual(await store.count(y), { members: 0, connections: 0 })
      assert.deepEqual(await store.list(y), [])
    })

    await suite.test('watched channels announce joins, connection changes and leaves; unwatched ones do not', async (t) => {
      const store = await factory(t)
      const seen = changes(store)
      const [watched, other] = [`p-${uid()}`, `p-${uid()}`]
      await store.watch(watched)
      await store.join(watched, member('alice', 'c1', { n: 1 }), 0)
      await store.join(watched, member('alice', 'c2', { n: 1 }), 0)
      await store.join(other, member('bob', 'c3'), 0)
      await store.leave(watched, member('alice', 'c2'))
      await store.leave(watched, member('alice', 'c1'))
      const expected: PresenceChange[] = [
        { channel: watched, type: 'join', sub: 'alice', info: { n: 1 } },
        { channel: watched, type: 'connections', sub: 'alice' },
        { channel: watched, type: 'connections', sub: 'alice' },
        { channel: watched, type: 'leave', sub: 'alice' }
      ]
      await until(() => seen.length >= expected.length, 'four changes announced')
      assert.deepEqual(seen, expected)
      await store.unwatch(watched)
      await store.join(watched, member('carol', 'c4'), 0)
      // A change of a channel still watched, made after: once it is seen, the unwatched one would have been too.
      await store.watch(other)
      await store.join(other, member('dave', 'c5'), 0)
      await until(() => seen.some((c) => c.sub === 'dave'), 'the change of the channel watched now')
      assert.equal(seen.some((c) => c.sub === 'carol'), false, 'nothing from the unwatched channel')
    })

    await suite.test('refresh keeps entries and is harmless for entries that left', async (t) => {
      const store = await factory(t)
      const ch = `p-${uid()}`
      const m = member('alice', 'c1')
      await store.join(ch, m, 0)
      await store.refresh(ch, [m])
      assert.deepEqual(await store.list(ch), [m])
      await store.leave(ch, m)
      await store.refresh(ch, [])
      assert.deepEqual(await store.count(ch), { members: 0, connections: 0 })
    })

    await suite.test('close is idempotent', async (t) => {
      const store = await factory(t)
      await store.close()
      await store.close()
    })
  })
}

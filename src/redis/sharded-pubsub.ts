import { Redis, type Cluster } from 'ioredis'
import calculateSlot from 'cluster-key-slot'
import type { Logger } from 'pino'
import { Errors } from '../errors.js'
import { busCall, redisOptions } from './connection.js'
import type { PubSub } from './pubsub.js'

/** One subscriber connection, to one master, and the channels subscribed there. */
interface NodeSub { key: string, redis: Redis, channels: Set<string>, connected: Promise<void>, connectedOnce: boolean, closing: boolean }

const RETRY_MS = 500

/**
 * Sharded pub/sub on a Redis Cluster (Redis 7 SSUBSCRIBE/SPUBLISH), managed here rather than trusted to the
 * client library, which has shipped silent-loss bugs in each of the three places this handles (resubscribe rejected
 * with CROSSSLOT, MOVED not followed, subscriptions dropped by a slot migration or a failover):
 *  - one subscriber connection per master; each channel SSUBSCRIBEd at the master that owns its slot, as the
 *    command client's slot map says (resubscribes are grouped per slot: never a cross-slot command);
 *  - whenever the topology may have changed — the command client refreshed its slot map (after a MOVED, say), a
 *    master's connection closed, a node pushed an unsolicited SUNSUBSCRIBE (its slot moved away) or answered MOVED —
 *    every channel is checked against the new owner of its slot and moved there;
 *  - every channel moved, or on a connection that came back, is reported (`reconnect`), and recovered from history.
 * What slips through even this — a subscription lost without any sign — the hub's position check catches.
 */
export class ShardedPubSub implements PubSub {
  readonly publishCommand = 'SPUBLISH'
  private readonly nodes = new Map<string, NodeSub>()
  /** channel -> the connection it is subscribed on */
  private readonly where = new Map<string, NodeSub>()
  private handlers: { message: (channel: string, message: string) => void, reconnect: (channels?: string[]) => void } = { message: () => {}, reconnect: () => {} }
  private rebalancing: Promise<void> | undefined
  private again = false
  private closing = false

  /** The slot map last rebalanced against: the command client refreshes it every few seconds, mostly unchanged. */
  private topology = ''

  constructor (private readonly cluster: Cluster, private readonly name: string, private readonly log: Logger, private readonly commandTimeoutMs = 5000) {
    cluster.on('refresh', () => { if (this.fingerprint() !== this.topology) this.rebalanceSoon(false) })
  }

  setHandlers (handlers: ShardedPubSub['handlers']): void { this.handlers = handlers }
  async connect (): Promise<void> {}
  ready (): boolean { return this.cluster.status === 'ready' }

  async subscribe (channel: string): Promise<void> {
    const node = this.node(await this.ownerOf(channel))
    const before = this.where.get(channel)
    if (before !== undefined && before !== node) this.drop(before, [channel])
    node.channels.add(channel)
    this.where.set(channel, node)
    try {
      await node.connected
      await busCall(() => node.redis.ssubscribe(channel))
    } catch (err) {
      if (this.where.get(channel) === node) { this.where.delete(channel); node.channels.delete(channel) }
      this.rebalanceSoon()
      throw err
    }
  }

  async unsubscribe (channel: string): Promise<void> {
    const node = this.where.get(channel)
    if (node === undefined) return
    this.where.delete(channel)
    this.drop(node, [channel])
  }

  async close (): Promise<void> {
    this.closing = true
    for (const node of this.nodes.values()) this.closeNode(node)
    this.nodes.clear()
    this.where.clear()
  }

  /** The master that owns a channel's slot now ("host:port"), refreshing the slot map once if it has none. */
  private async ownerOf (channel: string): Promise<string> {
    const slot = calculateSlot(channel)
    let owner = this.cluster.slots[slot]?.[0]
    if (owner === undefined) {
      await this.refreshSlots()
      owner = this.cluster.slots[slot]?.[0]
    }
    if (owner === undefined) throw new Errors.BUS_UNAVAILABLE(`no Redis node owns slot ${slot}`)
    return owner
  }

  private node (key: string): NodeSub {
    let node = this.nodes.get(key)
    if (node !== undefined) return node
    const [host, port] = [key.slice(0, key.lastIndexOf(':')), Number(key.slice(key.lastIndexOf(':') + 1))]
    const redis = new Redis({ ...redisOptions(this.name + '-sub', () => this.closing || created.closing, { autoResubscribe: false, commandTimeout: this.commandTimeoutMs }), host, port })
    const created: NodeSub = { key, redis, channels: new Set(), connected: Promise.resolve(), connectedOnce: false, closing: false }
    node = created
    created.connected = redis.connect().catch(() => {})
    redis.on('smessage', (channel: string, message: string) => { if (this.where.get(channel) === created) this.handlers.message(channel, message) })
    redis.on('ready', () => { void this.onNodeReady(created) })
    // A master that answers MOVED, or pushes an unsolicited SUNSUBSCRIBE (ioredis reports it as a command-queue
    // error), no longer owns some of our channels; a connection that closes may belong to a failed master.
    redis.on('moved', () => this.rebalanceSoon())
    redis.on('close', () => { if (!created.closing) this.rebalanceSoon() })
    redis.on('error', (err: Error) => {
      if (err.message.includes('Command queue state error')) {
        this.log.info({ node: key, reply: err.message.slice(err.message.indexOf('Last reply')) }, 'a Redis node dropped sharded subscriptions (slot moved); moving them')
        // The connection's reply bookkeeping can no longer be trusted: start it afresh (it resubscribes what stays).
        redis.disconnect(true)
        this.rebalanceSoon()
      } else {
        this.log.warn({ err: err.message, node: key }, 'redis sharded subscriber error')
      }
    })
    this.nodes.set(key, created)
    return created
  }

  /**
   * A connection (re)opened: SSUBSCRIBE its channels again, one command per slot, all sent at once (pipelined on
   * the connection, not one round trip after another), then report them.
   */
  private async onNodeReady (node: NodeSub): Promise<void> {
    if (!node.connectedOnce) { node.connectedOnce = true; return }
    const channels = [...node.channels]
    try {
      await Promise.all(bySlot(channels).map(async (group) => await node.redis.ssubscribe(...group)))
    } catch (err) {
      this.log.warn({ err: (err as Error).message, node: node.key }, 'sharded resubscribe failed; checking the topology')
      this.rebalanceSoon()
    }
    if (channels.length > 0) {
      this.log.info({ node: node.key, channels: channels.length }, 'redis sharded subscriber reconnected; recovering missed publications')
      this.handlers.reconnect(channels)
    }
  }

  /** Rebalances now, or once the one under way is done; `refresh`: ask the cluster for its slot map first. */
  private rebalanceSoon (refresh = true): void {
    if (this.closing) return
    if (this.rebalancing !== undefined) { this.again = true; return }
    this.rebalancing = this.rebalance(refresh).catch((err: unknown) => {
      this.log.warn({ err: (err as Error).message }, 'sharded pub/sub rebalance failed; retrying')
      this.again = true
    }).finally(() => {
      this.rebalancing = undefined
      if (this.again && !this.closing) {
        this.again = false
        setTimeout(() => this.rebalanceSoon(true), RETRY_MS).unref()
      }
    })
  }

  /** Moves every channel whose slot has a new owner, subscribes it there, and reports what moved. */
  private async rebalance (refresh: boolean): Promise<void> {
    if (refresh) await this.refreshSlots()
    this.topology = this.fingerprint()
    const moved = new Map<NodeSub, string[]>()
    for (const [channel, node] of this.where) {
      const owner = this.cluster.slots[calculateSlot(channel)]?.[0]
      if (owner === undefined || owner === node.key) continue
      this.drop(node, [channel])
      const target = this.node(owner)
      target.channels.add(channel)
      this.where.set(channel, target)
      moved.set(target, [...(moved.get(target) ?? []), channel])
    }
    const masters = new Set(this.cluster.slots.map((s) => s?.[0]))
    for (const node of this.nodes.values()) {
      if (node.channels.size === 0 && !masters.has(node.key)) { this.closeNode(node); this.nodes.delete(node.key) }
    }
    let failed = false
    await Promise.all([...moved].map(async ([node, channels]) => {
      await node.connected
      await Promise.all(bySlot(channels).map(async (group) => await node.redis.ssubscribe(...group).catch(() => { failed = true })))
    }))
    const all = [...moved.values()].flat()
    if (all.length > 0) {
      this.log.info({ channels: all.length }, 'sharded subscriptions moved to new owners; recovering missed publications')
      this.handlers.reconnect(all)
    }
    if (failed) this.again = true
  }

  private drop (node: NodeSub, channels: string[]): void {
    for (const c of channels) node.channels.delete(c)
    if (node.redis.status === 'ready') node.redis.sunsubscribe(...channels).catch(() => {})
  }

  private closeNode (node: NodeSub): void {
    node.closing = true
    node.redis.disconnect()
  }

  /** Who owns which slots, as one string (for "has it changed"). */
  private fingerprint (): string {
    let out = ''
    let last: string | undefined = ''
    this.cluster.slots.forEach((owners, slot) => { if (owners?.[0] !== last) { last = owners?.[0]; out += slot + '=' + String(last) + ';' } })
    return out
  }

  private async refreshSlots (): Promise<void> {
    await new Promise<void>((resolve, reject) => { this.cluster.refreshSlotsCache((err) => { if (err != null) reject(err); else resolve() }) })
  }
}

/** Channels grouped by slot: one SSUBSCRIBE may name several channels only if they share a slot. */
function bySlot (channels: string[]): string[][] {
  const groups = new Map<number, string[]>()
  for (const c of channels) {
    const slot = calculateSlot(c)
    const group = groups.get(slot)
    if (group === undefined) groups.set(slot, [c])
    else group.push(c)
  }
  return [...groups.values()]
}

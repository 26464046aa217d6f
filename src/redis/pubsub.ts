import { Cluster, Redis } from 'ioredis'
import type { Logger } from 'pino'
import { busCall, redisOptions, type CommandClient, type RedisTarget } from './connection.js'
import { ShardedPubSub } from './sharded-pubsub.js'

/**
 * Receiving from Redis pub/sub, whatever the deployment: one Redis (`SUBSCRIBE` on one connection) or a Redis
 * Cluster (sharded pub/sub: `SSUBSCRIBE` at the master that owns each channel's slot). Only the channels asked for
 * are subscribed. Pub/sub is at most once: whenever messages may have been missed — a reconnection, a failover, a
 * slot moved — `onReconnect` names the channels concerned, and the owner recovers them from history.
 */
export interface PubSub {
  /** The command that publishes to it from a script: PUBLISH or SPUBLISH. */
  readonly publishCommand: 'PUBLISH' | 'SPUBLISH'
  setHandlers: (handlers: { message: (channel: string, message: string) => void, reconnect: (channels?: string[]) => void }) => void
  connect: () => Promise<void>
  /** Subscribes (again, when already: re-establishing it). Rejects with HERALD_ERR_BUS_UNAVAILABLE. */
  subscribe: (channel: string) => Promise<void>
  unsubscribe: (channel: string) => Promise<void>
  ready: () => boolean
  close: () => Promise<void>
}

interface Handlers { message: (channel: string, message: string) => void, reconnect: (channels?: string[]) => void }
const NO_HANDLERS: Handlers = { message: () => {}, reconnect: () => {} }

/** One Redis: one subscriber connection, every channel on it. */
export class ClassicPubSub implements PubSub {
  readonly publishCommand = 'PUBLISH'
  private readonly sub: Redis
  private readonly channels = new Set<string>()
  private handlers = NO_HANDLERS
  private connectedOnce = false
  private closing = false

  constructor (url: string, name: string, private readonly log: Logger, commandTimeoutMs = 5000) {
    this.sub = new Redis(url, redisOptions(name, () => this.closing, { autoResubscribe: false, commandTimeout: commandTimeoutMs }))
    this.sub.on('error', (err: Error) => log.warn({ err: err.message, conn: name }, 'redis connection error'))
    this.sub.on('message', (channel: string, message: string) => this.handlers.message(channel, message))
    this.sub.on('ready', () => { void this.onReady() })
  }

  setHandlers (handlers: Handlers): void { this.handlers = handlers }
  async connect (): Promise<void> { await this.sub.connect() }
  ready (): boolean { return this.sub.status === 'ready' }

  async subscribe (channel: string): Promise<void> {
    this.channels.add(channel)
    try {
      await busCall(() => this.sub.subscribe(channel))
    } catch (err) {
      this.channels.delete(channel)
      throw err
    }
  }

  async unsubscribe (channel: string): Promise<void> {
    this.channels.delete(channel)
    if (this.sub.status === 'ready') await busCall(() => this.sub.unsubscribe(channel)).catch(() => {})
  }

  async close (): Promise<void> {
    this.closing = true
    await this.sub.quit().catch(() => {})
    this.sub.disconnect()
  }

  /**
   * Every (re)connection: subscribe again to every channel, and only then report the reconnect, so that the
   * catch-up from history cannot miss a publication made in between.
   */
  private async onReady (): Promise<void> {
    const channels = [...this.channels]
    try {
      if (channels.length > 0) await this.sub.subscribe(...channels)
    } catch (err) {
      this.log.warn({ err }, 'redis resubscribe failed; the connection will be retried')
      this.sub.disconnect(true)
      return
    }
    if (this.connectedOnce) {
      this.log.info({ channels: channels.length }, 'redis pub/sub reconnected; recovering missed publications')
      this.handlers.reconnect()
    }
    this.connectedOnce = true
  }
}

/** The pub/sub of `target`: classic on one instance, sharded on a cluster (alongside its command client). */
export function pubsubFor (target: RedisTarget, cmd: CommandClient, name: string, log: Logger, commandTimeoutMs = 5000): PubSub {
  if ('url' in target) return new ClassicPubSub(target.url, name, log, commandTimeoutMs)
  if (!(cmd instanceof Cluster)) throw new Error('a cluster target needs a cluster command client')
  return new ShardedPubSub(cmd, name, log, commandTimeoutMs)
}

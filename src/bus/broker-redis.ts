import type { ChainableCommander } from 'ioredis'
import type { Logger } from 'pino'
import type { StreamPosition } from '../protocol/cursor.js'
import { EMPTY_EPOCH, type Broker, type BrokerHandler, type BrokerOptions, type ControlHandler, type HistoryRequest, type HistoryResult, type Publication, type PublishRequest, type PublishResult } from './broker.js'
import { Errors } from '../errors.js'
import { busCall, closeClient, commandClient, type CommandClient, type RedisTarget } from '../redis/connection.js'
import { pubsubFor, type PubSub } from '../redis/pubsub.js'
import { HISTORY_LUA, publishLua, RESTART_EPOCH_LUA, type WithScripts } from './redis-scripts.js'
import { contentHash, frameTail, newEpoch } from './publication.js'

export interface RedisBrokerOptions extends BrokerOptions {
  /** One Redis (`{ url }`) or a Redis Cluster (`{ cluster: seeds }`); or `url` alone, as before. */
  target?: RedisTarget
  url?: string
  prefix: string
  log: Logger
  /** Milliseconds a command may take before it fails with HERALD_ERR_BUS_UNAVAILABLE. */
  commandTimeoutMs?: number
  /** Acknowledge a publish only once this many replicas hold it (WAIT), waiting at most timeoutMs. */
  wait?: { replicas: number, timeoutMs: number }
}

/**
 * The Redis bus, on one Redis or a Redis Cluster. One Lua call per publish assigns the offset, appends to a capped
 * stream and publishes (PUBLISH; SPUBLISH on a cluster: every key and the channel share the channel's slot), so
 * history and live delivery can never disagree. Commands go over a client without an offline queue (a publish
 * during an outage fails at once with 503 instead of waiting, and is never falsely acknowledged); live
 * publications come over pub/sub (redis/pubsub.ts), subscribed only for channels with local subscribers.
 */
export class RedisBroker implements Broker {
  readonly kind: string
  private handler: BrokerHandler = { onPublication: () => {}, onReconnect: () => {} }
  private readonly cmd: WithScripts
  private readonly pubsub: PubSub
  /** pub/sub channel name -> Herald channel */
  private readonly channels = new Map<string, string>()
  private closing = false
  private control?: ControlHandler
  private readonly controlName: string

  constructor (private readonly options: RedisBrokerOptions) {
    this.controlName = options.prefix + ':!control'
    const target = options.target ?? { url: options.url! }
    const timeout = options.commandTimeoutMs ?? 5000
    this.kind = 'url' in target ? 'redis' : 'redis-cluster'
    this.cmd = commandClient(target, 'herald-bus', options.log, () => this.closing, { commandTimeout: timeout }) as WithScripts
    this.pubsub = pubsubFor(target, this.cmd, 'herald-bus', options.log, timeout)
    this.cmd.defineCommand('heraldPublish', { numberOfKeys: 3, lua: publishLua(this.pubsub.publishCommand) })
    this.cmd.defineCommand('heraldHistory', { numberOfKeys: 2, lua: HISTORY_LUA })
    this.cmd.defineCommand('heraldRestartEpoch', { numberOfKeys: 2, lua: RESTART_EPOCH_LUA })
    this.pubsub.setHandlers({
      message: (name, message) => this.onMessage(name, message),
      reconnect: (names) => {
        if (names === undefined || names.includes(this.controlName)) this.control?.missed()
        this.handler.onReconnect(names?.map((n) => this.channels.get(n)).filter((c): c is string => c !== undefined))
      }
    })
  }

  setHandler (handler: BrokerHandler): void { this.handler = handler }

  async connect (): Promise<void> { await Promise.all([this.cmd.connect(), this.pubsub.connect()]) }

  async publish (req: PublishRequest): Promise<PublishResult> {
    const ts = Date.now()
    const { history, idempotencyTtlSeconds } = this.options
    const hash = req.idempotencyKey === undefined ? '' : contentHash(req)
    const base = this.base(req.channel)
    const idemKey = req.idempotencyKey === undefined ? base + ':m' : base + ':i:' + req.idempotencyKey
    const args = [
      base + ':m', base + ':s', idemKey,
      frameTail(req, ts), newEpoch(), req.historySize ?? history.size, req.historyTtlSeconds ?? history.ttlSeconds, history.metaTtlSeconds,
      idempotencyTtlSeconds, base, JSON.stringify(req.channel), hash, ts, req.version === undefined ? '' : String(req.version)]
    const replicas = this.options.wait?.replicas ?? 0
    const reply = replicas === 0
      ? await busCall(() => this.cmd.heraldPublish(...args))
      : await this.publishReplicated(args, replicas, this.options.wait!.timeoutMs)
    if (reply[0] === 'dup') {
      const [offset, epoch, prevHash] = String(reply[1]).split(' ')
      if (prevHash !== hash) throw new Errors.IDEMPOTENCY_CONFLICT(req.idempotencyKey, req.channel)
      return { channel: req.channel, offset: Number(offset), epoch, duplicate: true }
    }
    if (reply[0] === 'stale') return { channel: req.channel, offset: Number(reply[1]), epoch: String(reply[2]), duplicate: false, stale: true }
    return { channel: req.channel, offset: Number(reply[1]), epoch: String(reply[2]), duplicate: false }
  }

  /**
   * The publish script and WAIT in one pipeline: on a cluster the pipeline goes whole to the node of the script's
   * keys, so WAIT counts the replicas of the primary that took the publish. A retry of a duplicate waits too (its
   * first attempt may have been acknowledged by the primary alone).
   */
  private async publishReplicated (args: Array<string | number>, replicas: number, timeoutMs: number): Promise<[string, number | string, string?]> {
    const pipeline = this.cmd.pipeline() as ChainableCommander & { heraldPublish: (...a: Array<string | number>) => ChainableCommander }
    const results = await busCall(async () => await pipeline.heraldPublish(...args).wait(replicas, timeoutMs).exec())
    if (results === null) throw new Errors.BUS_UNAVAILABLE('pipeline aborted')
    const [[publishErr, reply], [waitErr, acked]] = results
    if (publishErr !== null) throw new Errors.BUS_UNAVAILABLE(publishErr.message)
    if (waitErr !== null || Number(acked) < replicas) {
      throw new Errors.BUS_UNAVAILABLE(`published but held by ${waitErr === null ? Number(acked) : 0} of ${replicas} replicas after ${timeoutMs} ms; retry with the same id`)
    }
    return reply as [string, number | string, string?]
  }

  async history (channel: string, req: HistoryRequest): Promise<HistoryResult> {
    const base = this.base(channel)
    const minTs = Date.now() - (req.historyTtlSeconds ?? this.options.history.ttlSeconds) * 1000
    const [epoch, top, earliest, entries, previousEpoch, previousOffset, lineage] = await busCall(() => this.cmd.heraldHistory(
      base + ':m', base + ':s', req.since, req.limit, this.options.history.metaTtlSeconds, minTs, req.maxBytes ?? Number.MAX_SAFE_INTEGER, EMPTY_EPOCH))
    const previous = previousEpoch === '' ? undefined : { offset: Number(previousOffset), epoch: previousEpoch }
    // Every epoch this one went on from, oldest first: an event belongs to the first one that it is not past the end of.
    const ends: StreamPosition[] = []
    const words = lineage.split(' ').filter(Boolean)
    for (let i = 0; i + 1 < words.length; i += 2) ends.push({ epoch: words[i], offset: Number(words[i + 1]) })
    if (previous !== undefined) ends.push(previous)
    const publications: Publication[] = entries.map(([id, fields]) => {
      const offset = parseInt(id, 10)
      return { channel, offset, epoch: ends.find((e) => offset <= e.offset)?.epoch ?? epoch, ts: Number(fields[1]), frame: fields[3] }
    })
    const result: HistoryResult = { publications, top: { offset: Number(top), epoch }, earliest: Number(earliest) }
    if (previous !== undefined) result.previous = previous
    if (ends.length > 1) result.earlier = ends.slice(0, -1).reverse()
    return result
  }

  async restartEpoch (channel: string, seen: { offset: number, epoch: string }): Promise<boolean> {
    const base = this.base(channel)
    return await busCall(() => this.cmd.heraldRestartEpoch(base + ':m', base + ':s', seen.epoch, seen.offset, newEpoch())) === 1
  }

  async subscribe (channel: string): Promise<void> {
    const name = this.base(channel)
    this.channels.set(name, channel)
    try {
      await this.pubsub.subscribe(name)
    } catch (err) {
      this.channels.delete(name)
      throw err
    }
  }

  async unsubscribe (channel: string): Promise<void> {
    const name = this.base(channel)
    this.channels.delete(name)
    await this.pubsub.unsubscribe(name)
  }

  /** On a cluster the control channel lives in the slot of its name: one shard carries every node's control messages. */
  async publishControl (message: string): Promise<number> {
    const name = this.controlName
    return Number(await busCall(async () => this.pubsub.publishCommand === 'SPUBLISH' ? await this.cmd.spublish(name, message) : await this.cmd.publish(name, message)))
  }

  async subscribeControl (handler: ControlHandler): Promise<void> {
    this.control = handler
    await this.pubsub.subscribe(this.controlName)
  }

  async removeHistory (channel: string): Promise<StreamPosition> {
    await busCall(async () => await this.cmd.del(this.base(channel) + ':s'))
    return (await this.history(channel, { since: 0, limit: 0 })).top
  }

  ready (): boolean { return this.cmd.status === 'ready' && this.pubsub.ready() }

  async close (): Promise<void> {
    this.closing = true
    await Promise.all([closeClient(this.cmd), this.pubsub.close()])
  }

  private base (channel: string): string { return this.options.prefix + ':{' + channel + '}' }

  private onMessage (name: string, message: string): void {
    if (name === this.controlName) { this.control?.message(message); return }
    const channel = this.channels.get(name)
    if (channel === undefined) return
    const a = message.indexOf(' ')
    const b = message.indexOf(' ', a + 1)
    const frame = message.slice(b + 1)
    // ts sits right after the epoch in the frame head; history readers have it as a field instead.
    const tsAt = frame.indexOf('"ts":') + 5
    const ts = parseInt(frame.slice(tsAt, frame.indexOf(',', tsAt)), 10)
    this.handler.onPublication({ channel, offset: parseInt(message.slice(0, a), 10), epoch: message.slice(a + 1, b), ts, frame })
  }
}

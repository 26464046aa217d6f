import type { Broker, BrokerHandler, BrokerOptions, HistoryRequest, HistoryResult, Publication, PublishRequest, PublishResult } from './broker.js'
import { Errors } from '../errors.js'
import { contentHash, frameTail, newEpoch } from './publication.js'
import { frame } from '../protocol/frames.js'

interface ChannelStream {
  epoch: string
  top: number
  /** Oldest first; bounded by history size and age. */
  entries: Publication[]
  idempotency: Map<string, { offset: number, hash: string, expires: number }>
  lastUsed: number
  /** Age bound of the channel's namespace, once known. */
  ttlSeconds?: number
}

const SWEEP_MS = 30_000

/**
 * The embedded bus: one process, no network. Same contract as the Redis bus (the shared contract suite
 * runs against both), so a single node needs nothing else. Its epochs are born with the process, so a
 * restart tells resuming clients that history is gone instead of handing them someone else's offsets.
 */
export class MemoryBroker implements Broker {
  readonly kind = 'memory'
  private handler: BrokerHandler = { onPublication: () => {}, onReconnect: () => {} }
  private readonly streams = new Map<string, ChannelStream>()
  private readonly subscribed = new Set<string>()
  private sweeper?: NodeJS.Timeout
  private closed = false

  constructor (private readonly options: BrokerOptions) {}

  setHandler (handler: BrokerHandler): void { this.handler = handler }

  async connect (): Promise<void> {
    this.sweeper = setInterval(() => this.sweep(Date.now()), SWEEP_MS).unref()
  }

  async publish (req: PublishRequest): Promise<PublishResult> {
    if (this.closed) throw new Errors.BUS_UNAVAILABLE('bus closed')
    const now = Date.now()
    const stream = this.stream(req.channel, now)
    if (req.historyTtlSeconds !== undefined) stream.ttlSeconds = req.historyTtlSeconds
    let hash = ''
    if (req.idempotencyKey !== undefined) {
      hash = contentHash(req)
      const prev = stream.idempotency.get(req.idempotencyKey)
      if (prev !== undefined && prev.expires > now) {
        if (prev.hash !== hash) throw new Errors.IDEMPOTENCY_CONFLICT(req.idempotencyKey, req.channel)
        return { channel: req.channel, offset: prev.offset, epoch: stream.epoch, duplicate: true }
      }
    }
    const offset = ++stream.top
    const pub: Publication = { channel: req.channel, offset, epoch: stream.epoch, ts: now, frame: frame.eventHead(JSON.stringify(req.channel), offset, stream.epoch) + frameTail(req, now) }
    const size = req.historySize ?? this.options.history.size
    if (size > 0) stream.entries.push(pub)
    while (stream.entries.length > size) stream.entries.shift()
    if (req.idempotencyKey !== undefined) {
      stream.idempotency.set(req.idempotencyKey, { offset, hash, expires: now + this.options.idempotencyTtlSeconds * 1000 })
    }
    if (this.subscribed.has(req.channel)) this.handler.onPublication(pub)
    return { channel: req.channel, offset, epoch: stream.epoch, duplicate: false }
  }

  async history (channel: string, req: HistoryRequest): Promise<HistoryResult> {
    if (this.closed) throw new Errors.BUS_UNAVAILABLE('bus closed')
    const now = Date.now()
    const stream = this.stream(channel, now)
    this.trimExpired(stream, now, req.historyTtlSeconds)
    const { entries, top } = stream
    const earliest = entries.length > 0 ? entries[0].offset : top + 1
    const publications: Publication[] = []
    if (req.limit > 0 && req.since < top) {
      const start = Math.max(0, req.since + 1 - earliest)
      for (let i = start; i < entries.length && publications.length < req.limit; i++) publications.push(entries[i])
    }
    return { publications, top: { offset: top, epoch: stream.epoch }, earliest }
  }

  async subscribe (channel: string): Promise<void> { this.subscribed.add(channel) }
  async unsubscribe (channel: string): Promise<void> { this.subscribed.delete(channel) }
  ready (): boolean { return !this.closed }

  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
  }

  private stream (channel: string, now: number): ChannelStream {
    let stream = this.streams.get(channel)
    if (stream === undefined) {
      stream = { epoch: newEpoch(), top: 0, entries: [], idempotency: new Map(), lastUsed: now }
      this.streams.set(channel, stream)
    }
    stream.lastUsed = now
    return stream
  }

  private trimExpired (stream: ChannelStream, now: number, ttlSeconds?: number): void {
    if (ttlSeconds !== undefined) stream.ttlSeconds = ttlSeconds
    const minTs = now - (stream.ttlSeconds ?? this.options.history.ttlSeconds) * 1000
    let n = 0
    while (n < stream.entries.length && stream.entries[n].ts < minTs) n++
    if (n > 0) stream.entries.splice(0, n)
  }

  /** Drops expired history and idempotency keys, and forgets channels idle past the meta TTL. */
  private sweep (now: number): void {
    const metaTtlMs = this.options.history.metaTtlSeconds * 1000
    for (const [channel, stream] of this.streams) {
      this.trimExpired(stream, now)
      for (const [key, entry] of stream.idempotency) if (entry.expires <= now) stream.idempotency.delete(key)
      if (metaTtlMs > 0 && now - stream.lastUsed > metaTtlMs && !this.subscribed.has(channel)) this.streams.delete(channel)
    }
  }
}

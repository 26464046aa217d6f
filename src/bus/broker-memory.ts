import { EMPTY_EPOCH, type Broker, type BrokerHandler, type ControlHandler, type BrokerOptions, type HistoryRequest, type HistoryResult, type Publication, type PublishRequest, type PublishResult } from './broker.js'
import { Errors } from '../errors.js'
import { contentHash, frameTail, newEpoch } from './publication.js'
import { frame } from '../protocol/frames.js'
import type { StreamPosition } from '../protocol/cursor.js'

interface ChannelStream {
  channel: string
  epoch: string
  top: number
  /** Oldest first, from `head` on (dropping from the front moves `head`, not the array); bounded by size and age. */
  entries: Publication[]
  head: number
  idempotency: Map<string, { offset: number, hash: string, expires: number }>
  lastUsed: number
  /** Age bound of the channel's namespace, once known. */
  ttlSeconds?: number
  /** The last `version` published (versioned publishes: see PublishRequest.version). */
  version?: number
}

const SWEEP_MS = 30_000

export interface MemoryBrokerOptions extends BrokerOptions {
  /** HISTORY_MAX_BYTES: the frames of every channel's history together; past it, the least recently used channels lose their oldest events. */
  maxBytes?: number
}

/**
 * The embedded bus: one process, no network. Same contract as the Redis bus (the shared contract suite
 * runs against both), so a single node needs nothing else. Its epochs are born with the process, so a
 * restart tells resuming clients that history is gone instead of handing them someone else's offsets.
 * All history together is bounded in bytes: what is trimmed to stay under it is trimmed like history that aged
 * out (a resume from before it is told `history_trimmed`).
 */
export class MemoryBroker implements Broker {
  readonly kind = 'memory'
  private handler: BrokerHandler = { onPublication: () => {}, onReconnect: () => {} }
  private readonly streams = new Map<string, ChannelStream>()
  private readonly subscribed = new Set<string>()
  private readonly controlHandlers = new Set<ControlHandler>()
  private sweeper?: NodeJS.Timeout
  private closed = false
  /** Bytes of every frame in history. */
  private bytes = 0
  /** Publications stored and not yet handed to the hub (see `dispatchSoon`), oldest first. */
  private queued: Publication[] = []
  private dispatchScheduled = false

  constructor (private readonly options: MemoryBrokerOptions) {}

  setHandler (handler: BrokerHandler): void { this.handler = handler }

  async connect (): Promise<void> {
    this.sweeper = setInterval(() => this.sweep(Date.now()), SWEEP_MS).unref()
  }

  get historyBytes (): number { return this.bytes }

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
    if (req.version !== undefined) {
      if (stream.version !== undefined && req.version <= stream.version) return { channel: req.channel, offset: stream.top, epoch: stream.epoch, duplicate: false, stale: true }
      stream.version = req.version
    }
    const offset = ++stream.top
    const pub: Publication = { channel: req.channel, offset, epoch: stream.epoch, ts: now, frame: frame.eventHead(JSON.stringify(req.channel), offset, stream.epoch) + frameTail(req, now) }
    const size = req.historySize ?? this.options.history.size
    if (size > 0) {
      stream.entries.push(pub)
      this.bytes += pub.frame.length
    }
    const kept = stream.entries.length - stream.head
    if (kept > size) this.dropOldest(stream, kept - size)
    if (this.options.maxBytes !== undefined && this.bytes > this.options.maxBytes) this.shed(this.options.maxBytes * 0.9)
    if (req.idempotencyKey !== undefined) {
      stream.idempotency.set(req.idempotencyKey, { offset, hash, expires: now + this.options.idempotencyTtlSeconds * 1000 })
    }
    // Delivery gets its own object: the transports hang their encoded bytes on it (transports/wire.ts), which must
    // not stay on the history entry — HISTORY_MAX_BYTES counts frames, not frames and their copies.
    if (this.subscribed.has(req.channel)) this.dispatchSoon({ ...pub })
    return { channel: req.channel, offset, epoch: stream.epoch, duplicate: false }
  }

  async history (channel: string, req: HistoryRequest): Promise<HistoryResult> {
    if (this.closed) throw new Errors.BUS_UNAVAILABLE('bus closed')
    const now = Date.now()
    // Reading creates nothing: a channel without a stream is at the empty position.
    const stream = this.streams.get(channel)
    if (stream === undefined) return { publications: [], top: { offset: 0, epoch: EMPTY_EPOCH }, earliest: 1 }
    stream.lastUsed = now
    this.trimExpired(stream, now, req.historyTtlSeconds)
    const { entries, head, top } = stream
    const earliest = entries.length > head ? entries[head].offset : top + 1
    const publications: Publication[] = []
    if (req.limit > 0 && req.since < top) {
      const maxBytes = req.maxBytes ?? Number.POSITIVE_INFINITY
      let bytes = 0
      for (let i = head + Math.max(0, req.since + 1 - earliest); i < entries.length && publications.length < req.limit; i++) {
        bytes += entries[i].frame.length
        if (bytes > maxBytes && publications.length > 0) break
        publications.push({ ...entries[i] }) // a copy, for the same reason as in publish
      }
    }
    return { publications, top: { offset: top, epoch: stream.epoch }, earliest }
  }

  /** Control messages go to every node sharing this bus (one process), each asynchronously, as over Redis. */
  async publishControl (message: string): Promise<number> {
    if (this.closed) throw new Errors.BUS_UNAVAILABLE('bus closed')
    for (const handler of this.controlHandlers) queueMicrotask(() => handler.message(message))
    return this.controlHandlers.size
  }

  async subscribeControl (handler: ControlHandler): Promise<void> { this.controlHandlers.add(handler) }

  async removeHistory (channel: string): Promise<StreamPosition> {
    if (this.closed) throw new Errors.BUS_UNAVAILABLE('bus closed')
    const stream = this.streams.get(channel)
    if (stream === undefined) return { offset: 0, epoch: EMPTY_EPOCH }
    this.dropOldest(stream, stream.entries.length)
    return { offset: stream.top, epoch: stream.epoch }
  }

  async subscribe (channel: string): Promise<void> { this.subscribed.add(channel) }
  async unsubscribe (channel: string): Promise<void> { this.subscribed.delete(channel) }
  ready (): boolean { return !this.closed }

  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
  }

  /**
   * Hands a stored publication to the hub after this turn of the event loop (setImmediate), with every other one
   * published in it, in publish order: the fan-out runs off the publishing request's stack — its 201 goes out
   * first, as over Redis — and the publications of one turn (the requests of one read) reach each socket in one
   * write. Offsets, history and idempotency are settled in `publish`; only the delivery is deferred.
   */
  private dispatchSoon (pub: Publication): void {
    this.queued.push(pub)
    if (this.dispatchScheduled) return
    this.dispatchScheduled = true
    setImmediate(this.dispatchQueued)
  }

  private readonly dispatchQueued = (): void => {
    this.dispatchScheduled = false
    const queued = this.queued
    this.queued = []
    if (this.closed) return
    for (let i = 0; i < queued.length; i++) {
      // One publication's failure (a bug in a sink) must not cost the others their delivery, nor the process.
      try { this.handler.onPublication(queued[i]) } catch (err) { process.emitWarning(err as Error) }
    }
  }

  private stream (channel: string, now: number): ChannelStream {
    let stream = this.streams.get(channel)
    if (stream === undefined) {
      stream = { channel, epoch: newEpoch(), top: 0, entries: [], head: 0, idempotency: new Map(), lastUsed: now }
      this.streams.set(channel, stream)
    }
    stream.lastUsed = now
    return stream
  }

  /** Drops the `n` oldest events of a stream. */
  private dropOldest (stream: ChannelStream, n: number): void {
    const end = Math.min(stream.head + n, stream.entries.length)
    for (let i = stream.head; i < end; i++) this.bytes -= stream.entries[i].frame.length
    stream.head = end
    // Compact once the dropped front outweighs what is kept.
    if (stream.head > 64 && stream.head * 2 > stream.entries.length) {
      stream.entries = stream.entries.slice(stream.head)
      stream.head = 0
    }
  }

  private trimExpired (stream: ChannelStream, now: number, ttlSeconds?: number): void {
    if (ttlSeconds !== undefined) stream.ttlSeconds = ttlSeconds
    const minTs = now - (stream.ttlSeconds ?? this.options.history.ttlSeconds) * 1000
    let n = 0
    while (stream.head + n < stream.entries.length && stream.entries[stream.head + n].ts < minTs) n++
    if (n > 0) this.dropOldest(stream, n)
  }

  /** Over HISTORY_MAX_BYTES: the least recently used channels lose their oldest events until `target` is met. */
  private shed (target: number): void {
    const byAge = [...this.streams.values()].sort((a, b) => a.lastUsed - b.lastUsed)
    for (const stream of byAge) {
      while (this.bytes > target && stream.head < stream.entries.length) this.dropOldest(stream, Math.max(1, (stream.entries.length - stream.head) >> 1))
      if (this.bytes <= target) return
    }
  }

  /** Drops expired history and idempotency keys, and forgets channels idle past the meta TTL. */
  private sweep (now: number): void {
    const metaTtlMs = this.options.history.metaTtlSeconds * 1000
    for (const [channel, stream] of this.streams) {
      this.trimExpired(stream, now)
      for (const [key, entry] of stream.idempotency) if (entry.expires <= now) stream.idempotency.delete(key)
      if (metaTtlMs > 0 && now - stream.lastUsed > metaTtlMs && !this.subscribed.has(channel)) {
        this.dropOldest(stream, stream.entries.length)
        this.streams.delete(channel)
      }
    }
  }
}

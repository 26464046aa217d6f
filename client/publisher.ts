import type { Backoff } from './backoff.js'
import type { Timers } from './clock.js'
import type { Link } from './connection.js'
import { ClientErrorCodes, HeraldError, TRANSIENT } from './errors.js'
import type { AckFrame } from './frames.js'
import type { PublishAck, PublishOptions } from './options.js'
import { OfflineQueue, type OfflineQueueOptions } from './queue.js'
import type { Rest } from './rest.js'
import type { ConnectionState } from './state.js'
import type { Tokens } from './tokens.js'
import { errorOf } from './transports/types.js'

const MAX_PUBLISH_ATTEMPTS = 10

interface PendingPublish {
  id: string
  channel: string
  data: unknown
  event?: string
  version?: number
  attempts: number
  settled: boolean
  resolve: (ack: PublishAck) => void
  reject: (err: HeraldError) => void
}

export interface PublisherOptions {
  queue: OfflineQueueOptions | undefined
  link: Link
  state: () => ConnectionState
  rest: Rest
  tokens: Tokens
  timers: Timers
  retryBackoff: Backoff
}

/**
 * Publishes, from the offline queue to their acknowledgement: WebSocket frames, or REST one at a time on SSE and
 * long-poll. Each keeps its idempotency id across retries and reconnects, so it is stored once.
 */
export class Publisher {
  private readonly queue: OfflineQueue<PendingPublish>
  /** Sent over the current WebSocket and not acknowledged yet, in send order. */
  private readonly inflight = new Map<string, PendingPublish>()
  private restBusy = false
  private restItem: PendingPublish | undefined
  private readonly idPrefix = randomId(6)

  constructor (private readonly options: PublisherOptions) {
    this.queue = new OfflineQueue(options.queue)
  }

  /** Publishes waiting to be sent or acknowledged. */
  get pending (): number { return this.queue.size + this.inflight.size + (this.restItem !== undefined ? 1 : 0) }

  async publish (channel: string, data: unknown, options: PublishOptions): Promise<PublishAck> {
    return await new Promise<PublishAck>((resolve, reject) => {
      const item: PendingPublish = {
        id: options.id ?? `${this.idPrefix}-${randomId(10)}`,
        channel,
        data: data === undefined ? null : data,
        event: options.event,
        ...(options.version !== undefined ? { version: options.version } : {}),
        attempts: 0,
        settled: false,
        resolve: (ack) => { if (!item.settled) { item.settled = true; resolve(ack) } },
        reject: (err) => { if (!item.settled) { item.settled = true; reject(err) } }
      }
      const rejected = this.queue.push(item)
      rejected?.reject(new HeraldError(ClientErrorCodes.QUEUE_OVERFLOW, `offline queue full (${this.queue.max}, ${this.queue.overflow})`, { channel: rejected.channel }))
      this.flush()
    })
  }

  /** Sends what waits in the queue, if a connection is open. */
  flush (): void {
    const t = this.options.link.active
    if (t === undefined || !this.options.link.open || this.options.state() !== 'connected') return
    if (t.bidirectional) {
      for (let item = this.queue.shift(); item !== undefined; item = this.queue.shift()) {
        if (item.settled) continue
        this.inflight.set(item.id, item)
        t.send!({ type: 'publish', channel: item.channel, data: item.data, event: item.event, id: item.id, version: item.version })
      }
    } else {
      void this.restPump()
    }
  }

  /** Settles the publish `frame` acknowledges; false when it is not one. */
  acked (frame: AckFrame): boolean {
    const item = this.inflight.get(frame.id)
    if (item === undefined) return false
    this.inflight.delete(frame.id)
    this.options.retryBackoff.reset()
    item.resolve({ channel: frame.channel ?? item.channel, offset: frame.offset ?? 0, epoch: frame.epoch ?? '', duplicate: frame.duplicate === true, ...(frame.stale === true ? { stale: true as const } : {}) })
    return true
  }

  /** Retries (transient errors) or rejects publish `id`; false when it is not one. */
  failed (id: string, error: HeraldError): boolean {
    const item = this.inflight.get(id)
    if (item === undefined) return false
    this.inflight.delete(id)
    if (TRANSIENT.has(error.code) && ++item.attempts < MAX_PUBLISH_ATTEMPTS) this.retryLater(item)
    else item.reject(error)
    return true
  }

  /** The connection was lost: publishes whose ack was lost with it go back to the front of the queue. */
  requeueInflight (): void {
    this.queue.requeue([...this.inflight.values()])
    this.inflight.clear()
  }

  rejectAll (error: HeraldError): void {
    const pending = [...this.inflight.values(), ...this.queue.drain()]
    if (this.restItem !== undefined) pending.push(this.restItem)
    this.inflight.clear()
    for (const item of pending) item.reject(error)
  }

  private retryLater (item: PendingPublish): void {
    this.queue.requeue([item])
    this.options.timers.later(() => this.flush(), this.options.retryBackoff.next())
  }

  /** SSE and long-poll publish over REST, one at a time so that they are stored in order. */
  private async restPump (): Promise<void> {
    if (this.restBusy) return
    this.restBusy = true
    const { link, state, retryBackoff } = this.options
    try {
      while (state() === 'connected' && link.open && link.active !== undefined && !link.active.bidirectional) {
        const item = this.queue.shift()
        if (item === undefined) break
        if (item.settled) continue
        this.restItem = item
        const outcome = await this.restPublish(item)
        this.restItem = undefined
        if (item.settled) { retryBackoff.reset(); continue }
        if (state() === 'closed') { item.reject(new HeraldError(ClientErrorCodes.CLOSED, 'the client was closed')); break }
        this.queue.requeue([item])
        if (outcome === 'retry') await this.options.timers.pause(retryBackoff.next())
      }
    } finally {
      this.restBusy = false
    }
    // Switched to WebSocket meanwhile: it sends what is left.
    if (link.active?.bidirectional === true) this.flush()
  }

  private async restPublish (item: PendingPublish): Promise<'done' | 'retry' | 'token'> {
    let res: Response
    try {
      res = await this.options.rest.publish(item.channel, { data: item.data, event: item.event, id: item.id, version: item.version })
    } catch {
      return 'retry'
    }
    if (res.status === 201 || res.status === 200) {
      try {
        const body = await res.json() as PublishAck
        item.resolve({ channel: body.channel, offset: body.offset, epoch: body.epoch, duplicate: body.duplicate === true, ...(body.stale === true ? { stale: true as const } : {}) })
        return 'done'
      } catch {
        return 'retry'
      }
    }
    const body = await errorOf(res)
    const error = new HeraldError(body.errorCode ?? `HTTP_${res.status}`, body.message ?? `HTTP ${res.status}`, { status: res.status, channel: item.channel })
    if (res.status === 401 && body.errorCode === 'HERALD_ERR_TOKEN_EXPIRED' && this.options.tokens.renewable && ++item.attempts < MAX_PUBLISH_ATTEMPTS) {
      try { await this.options.tokens.renew(); return 'token' } catch { return 'retry' }
    }
    if ((res.status === 429 || res.status >= 500) && ++item.attempts < MAX_PUBLISH_ATTEMPTS) return 'retry'
    item.reject(error)
    return 'done'
  }
}

/** Random hex from crypto.getRandomValues (available in insecure browser contexts too), else Math.random. */
function randomId (bytes: number): string {
  const buf = new Uint8Array(bytes)
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto
  if (typeof crypto?.getRandomValues === 'function') crypto.getRandomValues(buf)
  else for (let i = 0; i < bytes; i++) buf[i] = Math.floor(Math.random() * 256)
  let out = ''
  for (const b of buf) out += b.toString(16).padStart(2, '0')
  return out
}

import type { Publication } from '../bus/broker.js'
import type { NamespaceOptions } from '../namespaces.js'

/** What an outbox writes to: a WebSocket or an SSE response. */
export interface OutboxTarget {
  /** Bytes handed to the socket and not yet sent. */
  buffered: () => number
  write: (pub: Publication) => void
  /** `disconnect` policy: the bound was passed; close the connection (the client resumes from history). */
  evict: () => void
  /** `drop-oldest` / `coalesce` overflow: events of `channel` were dropped; tell the client to resume it. */
  dropped: (channel: string) => void
}

interface Slot { pub: Publication, bytes: number, key?: string, dead: boolean }

const FLUSH_MS = 10
const keys = new WeakMap<Publication, string | null>()

/** The value of `data[field]` of a publication, parsed once per publication and shared by every outbox. */
function coalesceKeyOf (pub: Publication, field: string): string | null {
  let key = keys.get(pub)
  if (key === undefined) {
    try {
      const value = (JSON.parse(pub.frame) as { data?: Record<string, unknown> }).data?.[field]
      key = value === undefined || value === null ? null : pub.channel + '\0' + String(value)
    } catch {
      key = null
    }
    keys.set(pub, key)
  }
  return key
}

/**
 * Bounds what one connection may hold in memory for a client that reads slowly, by the policy of each event's
 * namespace:
 *  - `disconnect`: events go straight to the socket; once it holds more than `maxBytes`, the connection is evicted.
 *  - `drop-oldest`: once the socket holds half the bound, events wait here (at most the other half); past that,
 *    the oldest are dropped and their channels told to resume.
 *  - `coalesce`: like drop-oldest, but a waiting event is replaced by a newer one with the same `coalesceKey`,
 *    so a behind dashboard gets only the latest value per key.
 * Events of one channel are never reordered.
 */
export class Outbox {
  private queue: Slot[] = []
  private queuedBytes = 0
  private readonly byKey = new Map<string, Slot>()
  private timer?: NodeJS.Timeout

  constructor (private readonly target: OutboxTarget, private readonly maxBytes: number) {}

  get pending (): number { return this.queue.length }

  /** Sends or holds one event; `ns` is the options of its channel's namespace. */
  push (pub: Publication, ns: NamespaceOptions | undefined): void {
    const policy = ns?.backpressure ?? 'disconnect'
    if (policy === 'disconnect') {
      if (this.target.buffered() > this.maxBytes) { this.target.evict(); return }
      this.target.write(pub)
      return
    }
    if (this.queue.length === 0 && this.target.buffered() < this.maxBytes / 2) { this.target.write(pub); return }
    const bytes = pub.frame.length
    const key = policy === 'coalesce' && ns?.coalesceKey !== undefined ? coalesceKeyOf(pub, ns.coalesceKey) : null
    const existing = key === null ? undefined : this.byKey.get(key)
    if (existing !== undefined && !existing.dead) {
      this.queuedBytes += bytes - existing.bytes
      existing.pub = pub
      existing.bytes = bytes
    } else {
      const slot: Slot = { pub, bytes, key: key ?? undefined, dead: false }
      this.queue.push(slot)
      this.queuedBytes += bytes
      if (key !== null) this.byKey.set(key, slot)
    }
    while (this.queuedBytes > this.maxBytes / 2 && this.queue.length > 0) this.dropChannel(this.queue[0].pub.channel)
    this.schedule()
  }

  /** Forgets everything queued (the connection closed). */
  clear (): void {
    clearTimeout(this.timer)
    this.queue = []
    this.byKey.clear()
    this.queuedBytes = 0
  }

  /** Drops every queued event of a channel (they follow a gap now) and tells the target. */
  private dropChannel (channel: string): void {
    this.queue = this.queue.filter((slot) => {
      if (slot.pub.channel !== channel) return true
      this.forget(slot)
      return false
    })
    this.target.dropped(channel)
  }

  private forget (slot: Slot): void {
    slot.dead = true
    this.queuedBytes -= slot.bytes
    if (slot.key !== undefined && this.byKey.get(slot.key) === slot) this.byKey.delete(slot.key)
  }

  private schedule (): void {
    if (this.timer === undefined && this.queue.length > 0) this.timer = setTimeout(() => this.flush(), FLUSH_MS).unref()
  }

  private flush (): void {
    this.timer = undefined
    let i = 0
    while (i < this.queue.length && this.target.buffered() < this.maxBytes / 2) {
      const slot = this.queue[i++]
      this.forget(slot)
      this.target.write(slot.pub)
    }
    this.queue = this.queue.slice(i)
    this.schedule()
  }
}

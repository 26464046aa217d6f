import type { Publication } from '../bus/broker.js'
import type { NamespaceOptions } from '../namespaces.js'
import type { SubscribeResult } from '../hub/sink.js'

/** What an outbox writes to: a session, and through it its transport. */
export interface OutboxTarget {
  /** Bytes handed to the connection and not yet sent. */
  buffered: () => number
  writeEvent: (pub: Publication) => void
  /** A control frame (ack, error, pong, presence, subscribed…); `result` when it is a `subscribed` frame. */
  writeFrame: (frame: string, result?: SubscribeResult) => void
  /** `disconnect` policy: the bound was passed; close the connection (the client resumes from history). */
  evict: () => void
  /** `drop-oldest` / `coalesce` overflow: events of `channel` were dropped; tell the client to resume it. */
  dropped: (channel: string) => void
}

/**
 * A waiting event (`pub`) or control frame (`frame`). `held`: never dropped for the bound — part of a resume's
 * replay (the client asked for that burst), a control frame (an answer), or a `disconnect`-policy event queued
 * behind one of those: it waits for the socket to drain.
 */
interface Slot { pub?: Publication, frame?: string, result?: SubscribeResult, channel?: string, bytes: number, key?: string, dead: boolean, held: boolean, replay: boolean }

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
 *
 * A resume's replay (`push(…, true)`) is a burst the client asked for, not a sign that it is slow: it waits here
 * and goes out as the socket drains, whatever the policy (its bytes are already in memory: the history read).
 * Only live events count against the bound.
 *
 * Control frames (`control`) — acks, errors, pongs, presence replies — are answers: never dropped, never
 * reordered with the events around them, and counted against the bound like live events, so a client that sends
 * requests and never reads the answers is evicted rather than growing this process's memory.
 */
export class Outbox {
  private queue: Slot[] = []
  /** Bytes of the droppable (drop-oldest / coalesce) slots. */
  private queuedBytes = 0
  /** Held slots waiting, and the bytes of the live ones among them (bounded like the socket). */
  private held = 0
  private heldLiveBytes = 0
  /** Coalesce index (coalesce namespaces only; most outboxes never need one). */
  private byKey?: Map<string, Slot>
  private timer?: NodeJS.Timeout
  /** Waiting for the outbox to drain (the next page of a replay), and the timer that watches for it. */
  private drainWaiters?: Array<() => void>
  private drainTimer?: NodeJS.Timeout

  constructor (private readonly target: OutboxTarget, private readonly maxBytes: number) {}

  get pending (): number { return this.queue.length }

  /** Bytes of the events and frames waiting here (a scrape-time figure: walks the queue). */
  get bytes (): number {
    let total = 0
    for (const slot of this.queue) if (!slot.dead) total += slot.bytes
    return total
  }

  /** Resolves once nothing waits here and the connection holds at most half the bound (or the outbox is cleared). */
  whenDrained (): Promise<void> {
    if (this.drained()) return Promise.resolve()
    return new Promise((resolve) => {
      (this.drainWaiters ??= []).push(resolve)
      this.drainTimer ??= setInterval(() => { if (this.drained()) this.wakeDrainWaiters() }, FLUSH_MS).unref()
    })
  }

  /** Sends or holds one event; `ns` is the options of its channel's namespace, `replay` marks a resume's replay. */
  push (pub: Publication, ns: NamespaceOptions | undefined, replay = false): void {
    const policy = ns?.backpressure ?? 'disconnect'
    // A replay that fits goes out at once, as live events do; only the part past the bound waits.
    if (replay && this.queue.length === 0 && this.target.buffered() <= this.maxBytes) { this.target.writeEvent(pub); return }
    if (replay || (policy === 'disconnect' && this.held > 0)) {
      // Behind a replay, a live event waits its turn; the client is slow only if these pile up past the bound.
      this.hold({ pub, channel: pub.channel, bytes: pub.frame.length, dead: false, held: true, replay })
      return
    }
    if (policy === 'disconnect') {
      if (this.target.buffered() > this.maxBytes) { this.target.evict(); return }
      this.target.writeEvent(pub)
      return
    }
    if (this.queue.length === 0 && this.target.buffered() < this.maxBytes / 2) { this.target.writeEvent(pub); return }
    const bytes = pub.frame.length
    const key = policy === 'coalesce' && ns?.coalesceKey !== undefined ? coalesceKeyOf(pub, ns.coalesceKey) : null
    const existing = key === null ? undefined : this.byKey?.get(key)
    if (existing !== undefined) {
      // Superseded: the newer event takes a new place at the end, so offsets never go back.
      this.forget(existing)
      this.queue.splice(this.queue.indexOf(existing), 1)
    }
    const slot: Slot = { pub, channel: pub.channel, bytes, key: key ?? undefined, dead: false, held: false, replay: false }
    this.queue.push(slot)
    this.queuedBytes += bytes
    if (key !== null) (this.byKey ??= new Map()).set(key, slot)
    while (this.queuedBytes > this.maxBytes / 2) {
      const oldest = this.queue.find((s) => !s.held)
      if (oldest === undefined) break
      this.dropChannel(oldest.channel!)
    }
    this.schedule()
  }

  /** Sends a control frame now, or after the events already waiting; evicts a client that lets them pile up. */
  control (frame: string, result?: SubscribeResult): void {
    if (this.queue.length === 0) {
      if (this.target.buffered() > this.maxBytes) { this.target.evict(); return }
      this.target.writeFrame(frame, result)
      return
    }
    this.hold({ frame, result, bytes: frame.length, dead: false, held: true, replay: false })
  }

  /** Forgets the queued events of a channel the client no longer receives (unsubscribed). */
  discard (channel: string): void {
    this.queue = this.queue.filter((slot) => {
      if (slot.pub === undefined || slot.channel !== channel) return true
      this.forget(slot)
      return false
    })
  }

  /** Forgets everything queued (the connection closed). */
  clear (): void {
    this.wakeDrainWaiters()
    clearTimeout(this.timer)
    this.queue = []
    this.byKey = undefined
    this.queuedBytes = 0
    this.held = 0
    this.heldLiveBytes = 0
  }

  private drained (): boolean { return this.queue.length === 0 && this.target.buffered() <= this.maxBytes / 2 }

  private wakeDrainWaiters (): void {
    clearInterval(this.drainTimer)
    this.drainTimer = undefined
    const waiters = this.drainWaiters
    this.drainWaiters = undefined
    if (waiters !== undefined) for (const wake of waiters) wake()
  }

  /** Queues a slot that is never dropped; a live one counts against the bound (past it, the client is evicted). */
  private hold (slot: Slot): void {
    if (!slot.replay && this.target.buffered() + this.heldLiveBytes > this.maxBytes) { this.target.evict(); return }
    this.queue.push(slot)
    this.held++
    if (!slot.replay) this.heldLiveBytes += slot.bytes
    this.schedule()
  }

  /** Drops every queued event of a channel (they follow a gap now) and tells the target. */
  private dropChannel (channel: string): void {
    this.discard(channel)
    this.target.dropped(channel)
  }

  private forget (slot: Slot): void {
    if (slot.dead) return
    slot.dead = true
    if (slot.held) {
      this.held--
      if (!slot.replay) this.heldLiveBytes -= slot.bytes
      return
    }
    this.queuedBytes -= slot.bytes
    if (slot.key !== undefined && this.byKey?.get(slot.key) === slot) this.byKey.delete(slot.key)
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
      if (slot.pub !== undefined) this.target.writeEvent(slot.pub)
      else this.target.writeFrame(slot.frame!, slot.result)
    }
    this.queue = this.queue.slice(i)
    this.schedule()
  }
}

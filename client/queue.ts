/**
 * What happens when a publish arrives and the queue is full:
 * - `reject-oldest` (default): the oldest waiting publish is rejected (HERALD_CLIENT_QUEUE_OVERFLOW) to make
 *   room — the newest data wins (chat, dashboards).
 * - `reject-newest`: the new publish is rejected and the queue is left as it was — what was accepted first is sent
 *   first (commands, orders).
 */
export type OverflowPolicy = 'reject-oldest' | 'reject-newest'

export interface OfflineQueueOptions {
  /** Most publishes held that were never sent (default 1000; 0 = hold none: publishing needs a connection). */
  max?: number
  overflow?: OverflowPolicy
}

/**
 * A bounded FIFO of publishes waiting for a connection. `push` enforces the bound. `requeue` puts back, at the
 * front, publishes that were already sent once and whose acknowledgement was lost with the connection: they keep
 * their place, do not count against the bound and are never evicted by it, because they may already be stored —
 * they are resent with the same idempotency id and acknowledged once.
 */
export class OfflineQueue<T> {
  readonly max: number
  readonly overflow: OverflowPolicy
  private items: T[] = []
  /** How many items at the front were requeued (sent before). */
  private pinned = 0

  constructor (options: OfflineQueueOptions = {}) {
    this.max = options.max ?? 1000
    this.overflow = options.overflow ?? 'reject-oldest'
    if (!Number.isInteger(this.max) || this.max < 0) throw new RangeError('offlineQueue.max must be an integer >= 0')
    if (this.overflow !== 'reject-oldest' && this.overflow !== 'reject-newest') throw new RangeError('offlineQueue.overflow must be reject-oldest or reject-newest')
  }

  /** Every item held, requeued ones included. */
  get size (): number { return this.items.length }

  /** Items that count against the bound (never sent). */
  get unsent (): number { return this.items.length - this.pinned }

  /** Appends `item`; returns the item the overflow policy rejected (the new one or the oldest unsent), if any. */
  push (item: T): T | undefined {
    if (this.unsent < this.max) { this.items.push(item); return undefined }
    if (this.overflow === 'reject-newest' || this.max === 0) return item
    const [evicted] = this.items.splice(this.pinned, 1)
    this.items.push(item)
    return evicted
  }

  /** Puts `items` (already sent once) back at the front, in their order, outside the bound. */
  requeue (items: T[]): void {
    if (items.length === 0) return
    this.items = [...items, ...this.items]
    this.pinned += items.length
  }

  shift (): T | undefined {
    if (this.items.length === 0) return undefined
    if (this.pinned > 0) this.pinned--
    return this.items.shift()
  }

  peek (): T | undefined { return this.items[0] }

  /** Removes and returns everything. */
  drain (): T[] {
    const all = this.items
    this.items = []
    this.pinned = 0
    return all
  }

  toArray (): T[] { return [...this.items] }
}

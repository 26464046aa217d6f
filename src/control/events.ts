/**
 * The events tail of the admin console (docs/operations.md): a node's last notable events — connections closed by
 * the server (with code and reason: server API disconnects, revocations, slow-consumer evictions, token expiry,
 * drain), heartbeat timeouts, refusals (429) and bus reconnects — in a bounded ring. Recorded next to the metrics
 * counters of the same events, never per delivery; never a token or a payload, and every string bounded.
 */

export type EventKind = 'closed' | 'eviction' | 'token-expired' | 'heartbeat-timeout' | 'refused' | 'bus-reconnect'

export interface NodeEvent {
  /** Milliseconds since 1970. */
  ts: number
  /** Increasing on this node: newer events have larger numbers. */
  seq: number
  kind: EventKind
  /** A close code (`4504`) or an error code (`HERALD_ERR_RATE_LIMITED`). */
  code?: string
  /** Who and why, in at most MAX_DETAIL characters. */
  detail: string
}

export const EVENTS_KEPT = 200
export const MAX_DETAIL = 200

export function bounded (text: string, max = MAX_DETAIL): string {
  return text.length <= max ? text : text.slice(0, max - 1) + '…'
}

export class EventLog {
  private readonly ring: Array<NodeEvent | undefined>
  private next = 0
  private seq = 0

  constructor (readonly capacity = EVENTS_KEPT) { this.ring = new Array<NodeEvent | undefined>(capacity) }

  record (kind: EventKind, detail: string, code?: string | number): void {
    const event: NodeEvent = { ts: Date.now(), seq: ++this.seq, kind, detail: bounded(detail) }
    if (code !== undefined) event.code = bounded(String(code), 64)
    this.ring[this.next] = event
    this.next = (this.next + 1) % this.capacity
  }

  /** The newest `limit` events, newest first; only those after `afterSeq` when given. */
  list (limit: number, afterSeq = 0): NodeEvent[] {
    const out: NodeEvent[] = []
    for (let i = 1; i <= this.capacity && out.length < limit; i++) {
      const e = this.ring[(this.next - i + this.capacity) % this.capacity]
      if (e === undefined || e.seq <= afterSeq) break
      out.push(e)
    }
    return out
  }

  get lastSeq (): number { return this.seq }
}

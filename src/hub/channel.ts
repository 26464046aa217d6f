import { EMPTY_EPOCH, type Publication } from '../bus/broker.js'
import type { Sink } from './sink.js'
import { LIVE_BUFFER_MAX, type Subscription } from './replay.js'

export interface HubObserver {
  dispatched: (pub: Publication) => void
  reconnected: () => void
  /** A channel was found behind the bus and caught up from history (`gap`: a publication did not follow; `position`: the position check). */
  caughtUp: (reason: 'gap' | 'reconnect' | 'position') => void
}

type Phase = 'activating' | 'live' | 'syncing'

/** Most publications held for a channel while it activates or catches up (see ChannelState.hold). */
const MAX_PENDING = 10_000

/**
 * One channel on this node: its local subscribers and where the node stands in its stream. Publications are
 * dispatched strictly in offset order; one that does not follow (a gap, another epoch) or arrives while the
 * channel is not live is held, and the hub catches up from history (Hub.resync) before anything newer goes out.
 */
export class ChannelState {
  phase: Phase = 'activating'
  /** Last offset dispatched to subscribers, and its epoch. */
  offset = 0
  epoch = ''
  readonly subs = new Map<Sink, Subscription>()
  /** Publications that arrived while activating or syncing. */
  pending: Publication[] = []
  /** Subscribe calls waiting for activation. */
  waiters = 0
  /** A reconnect arrived during a catch-up (or held publications were let go): catch up once more. */
  resyncAgain = false
  ready: Promise<void> = Promise.resolve()
  retry?: NodeJS.Timeout
  /** When a publication was last dispatched (or the channel went live): channels idle longer get position checks. */
  lastDispatch = Date.now()

  constructor (readonly name: string, private readonly observer?: HubObserver) {}

  /**
   * Keeps a publication that arrived while the channel is activating or catching up. Bounded: history is the
   * source of truth, so past the bound the held ones are let go and a catch-up reads them again.
   */
  hold (pub: Publication): void {
    if (this.pending.push(pub) > MAX_PENDING) {
      this.pending = []
      this.resyncAgain = true
    }
  }

  /** Dispatches a live publication if it is the next one; otherwise holds it and returns true: catch up first. */
  accept (pub: Publication): boolean {
    // The first event of a stream created since the channel went live (it was at the empty position).
    if (this.offset === 0 && this.epoch === EMPTY_EPOCH && pub.offset === 1) this.epoch = pub.epoch
    if (pub.epoch === this.epoch) {
      if (pub.offset <= this.offset) return false // already dispatched (replayed by a catch-up)
      if (pub.offset === this.offset + 1) { this.offset = pub.offset; this.dispatch(pub); return false }
    }
    this.hold(pub)
    return true
  }

  dispatch (pub: Publication): void {
    this.lastDispatch = Date.now()
    this.observer?.dispatched(pub)
    for (const [sink, sub] of this.subs) {
      if (sub.buffer === null) {
        if (pub.offset > sub.offset) { sub.offset = pub.offset; sink.deliver(pub, false, sub) }
      } else if (sub.buffer.push(pub) > 2 * LIVE_BUFFER_MAX) {
        // A replay that cannot keep up holds only the newest; it reads the rest from history.
        sub.buffer.splice(0, sub.buffer.length - LIVE_BUFFER_MAX)
      }
    }
  }

  deliverTo (sink: Sink, sub: Subscription, pub: Publication, replay = false): void {
    if (pub.offset > sub.offset) { sub.offset = pub.offset; sink.deliver(pub, replay, sub) }
  }

  /** Goes through what was held, in order; true when one of them calls for a catch-up. */
  drainPending (): boolean {
    const pending = this.pending
    this.pending = []
    for (let i = 0; i < pending.length; i++) {
      if (this.phase !== 'live') { this.pending.push(...pending.slice(i)); return false }
      if (this.accept(pending[i])) { this.pending.push(...pending.slice(i + 1)); return true }
    }
    return false
  }
}

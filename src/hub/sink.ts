import type { Publication } from '../bus/broker.js'
import type { PresenceMember } from '../presence/presence.js'
import type { RecoveryFailure } from '../protocol/frames.js'
import type { Subscription } from './replay.js'

export type { RecoveryFailure }

export interface SubscribeResult {
  channel: string
  /** Position the subscription starts from: events after it follow, in order. */
  offset: number
  epoch: string
  /** Only for a subscribe with `since`: were all events after it replayed? */
  recovered?: boolean
  reason?: RecoveryFailure
  /** Events replayed from history. */
  replayed: number
}

/**
 * A receiver of publications: one per WebSocket connection, SSE stream or waiting long-poll. The hub calls it
 * synchronously and in offset order per channel; the sink owns buffering and writing.
 */
export interface Sink {
  readonly id: string
  /** Who this sink is in presence; sinks without one (long-polls) never join presence. */
  readonly member?: PresenceMember
  /** A subscription is ready: called right before its replay (if any), then live events follow. */
  subscribed: (result: SubscribeResult) => void
  /**
   * `replay`: part of a resume's catch-up burst (history, then what arrived while it was read), not live. `sub`: the
   * subscription it is delivered for (the object the sink gave Hub.subscribe, if it gave one).
   */
  deliver: (pub: Publication, replay: boolean, sub: Subscription) => void
  /**
   * The hub can no longer continue the channel without a gap (the bus came back with a new epoch, or missed
   * events are no longer in history). The subscription is already removed; the sink tells its client to
   * resubscribe from its last position, which will answer `recovered: false`.
   */
  lost: (channel: string, reason: RecoveryFailure) => void
  /** A non-event frame for the channel's subscribers (presence changes), serialised once for all of them. */
  notify?: (channel: string, frame: string) => void
  /**
   * Waits for the sink's turn to take a page of replay: one page at a time per sink, once the pages before it
   * have gone out (its outbox drained). Resolves with `release`, called when the page has been handed over.
   * Without it, pages are read back to back.
   */
  replayTurn?: () => Promise<() => void>
}

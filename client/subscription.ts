import { Emitter } from './emitter.js'
import type { Position } from './cursor.js'
import type { EventFrame, RecoveryReason, SubscribedFrame } from './frames.js'
import jsonPatch from 'fast-json-patch'
import { ClientErrorCodes, HeraldError } from './errors.js'

/** One event of a channel, as the application sees it: each exactly once, in offset order. */
export interface HeraldEvent {
  channel: string
  offset: number
  epoch: string
  /** Publish time, ms since 1970. */
  ts: number
  /** The event name given at publish, if any. */
  event?: string
  data: unknown
}

export interface SubscribedInfo {
  channel: string
  /** The position the subscription continues from. */
  offset: number
  epoch: string
  /** True when this (re)subscription resumed from a position and everything after it follows. */
  recovered?: boolean
  /** Events replayed from history right after this. */
  replayed: number
  /** Whether this was a resubscription (after a reconnect, a transport switch or a server request). */
  resubscribed: boolean
}

/**
 * The subscription could not be resumed without a gap: events after `previous` are lost to this client (history was
 * trimmed, the stream was reset, or the bus lost events). Delivery continues live from `offset`/`epoch`; reload the
 * application's state (e.g. from its own database) and carry on.
 */
export interface RecoveryFailed { channel: string, reason: RecoveryReason | string, previous?: Position, offset: number, epoch: string }

export interface PresenceJoin { channel: string, sub: string, info?: unknown }
export interface PresenceLeave { channel: string, sub: string }
export interface PresenceCount { channel: string, members: number, connections: number }

export interface SubscriptionEvents {
  event: HeraldEvent
  subscribed: SubscribedInfo
  'recovery-failed': RecoveryFailed
  join: PresenceJoin
  leave: PresenceLeave
  count: PresenceCount
  /** The subscription failed (forbidden, unknown namespace, channel full …); it is over. */
  error: HeraldError
  unsubscribed: { channel: string, reason: string }
}

/**
 * - `pending`: asked for, not (yet / again) confirmed by the server — e.g. while reconnecting;
 * - `subscribed`: events flow;
 * - `unsubscribed`: `unsubscribe()` was called or the client closed;
 * - `failed`: the server refused it (see the `error` event).
 */
export type SubscriptionState = 'pending' | 'subscribed' | 'unsubscribed' | 'failed'

export interface SubscriptionOwner { removeSubscription: (sub: Subscription) => void }

/**
 * A channel the application listens to. It outlives connections: after a reconnect (or a switch of transport) the
 * client subscribes again from `position`, and events at or before it (in the same epoch) are dropped, so the
 * application sees every event exactly once and in order.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  state: SubscriptionState = 'pending'
  /** The last position delivered to the application (or given as `since`); where a resume starts. */
  position: Position | undefined
  /** Whether the server confirmed this subscription at least once. */
  private confirmed = false
  /**
   * What the application's subscribe hook gave this subscriber (docs/proxy.md), from the latest `subscribed`.
   */
  data: unknown

  /** The data of the last event delivered, while delta delivery may patch it (`delta`). */
  private lastData: unknown

  /**
   * `server`: the server made it (the token's `channels`, the connect hook, the server API); the client did not ask.
   * `delta`: asked for delta delivery (namespaces with `delta`): events arrive whole all the same.
   */
  constructor (readonly channel: string, private readonly owner: SubscriptionOwner | undefined, since?: Position, readonly server = false, readonly delta = false) {
    super()
    if (since !== undefined) this.position = { offset: since.offset, epoch: since.epoch }
  }

  get active (): boolean { return this.state === 'pending' || this.state === 'subscribed' }

  /** Stops the subscription; no event is emitted for it afterwards. */
  unsubscribe (): void {
    if (!this.active) return
    this.state = 'unsubscribed'
    this.owner?.removeSubscription(this)
    this.emit('unsubscribed', { channel: this.channel, reason: 'client' })
  }

  // ---- called by the client (not part of the application API) ----

  /** @internal A `subscribed` frame (or its long-poll equivalent). */
  handleSubscribed (frame: Pick<SubscribedFrame, 'offset' | 'epoch' | 'recovered' | 'reason' | 'replayed' | 'data'>): void {
    if (!this.active) return
    if (frame.data !== undefined) this.data = frame.data
    const previous = this.position
    this.position = { offset: frame.offset, epoch: frame.epoch }
    this.state = 'subscribed'
    const resubscribed = this.confirmed
    this.confirmed = true
    if (frame.recovered === false) {
      this.emit('recovery-failed', { channel: this.channel, reason: frame.reason ?? 'unknown', previous, offset: frame.offset, epoch: frame.epoch })
    }
    this.emit('subscribed', { channel: this.channel, offset: frame.offset, epoch: frame.epoch, recovered: frame.recovered, replayed: frame.replayed, resubscribed })
  }

  /**
   * @internal An event frame. Returns false (and emits nothing) for an event at or before the last delivered
   * position of the same epoch: a replay overlapping what was already seen.
   */
  handleEvent (frame: EventFrame): boolean {
    if (!this.active) return false
    const pos = this.position
    if (pos !== undefined && pos.epoch === frame.epoch && frame.offset <= pos.offset) return false
    let data = frame.data
    if (frame.delta === true) {
      // A patch of the event just before, which the server sends only to a subscriber that holds it.
      if (pos === undefined || pos.epoch !== frame.epoch || pos.offset !== frame.offset - 1) {
        this.handleFailure(new HeraldError(ClientErrorCodes.DELTA, `a delta event at ${frame.offset} does not follow ${pos?.offset ?? 'nothing'}`, { channel: this.channel }))
        return false
      }
      try {
        data = jsonPatch.applyPatch(this.lastData, frame.data as jsonPatch.Operation[], true, false).newDocument
      } catch (err) {
        this.handleFailure(new HeraldError(ClientErrorCodes.DELTA, 'a delta event did not apply: ' + String((err as Error).message), { channel: this.channel }))
        return false
      }
    }
    if (this.delta) this.lastData = data
    this.position = { offset: frame.offset, epoch: frame.epoch }
    const event: HeraldEvent = { channel: frame.channel, offset: frame.offset, epoch: frame.epoch, ts: frame.ts, data }
    if (frame.event !== undefined) event.event = frame.event
    this.emit('event', event)
    return true
  }

  /** @internal The connection is gone: wait for the next `subscribed`. */
  handleDisconnect (): void {
    if (this.state === 'subscribed') this.state = 'pending'
  }

  /** @internal */
  handlePresence (joins: Array<{ sub: string, info?: unknown }>, leaves: Array<{ sub: string }>): void {
    if (!this.active) return
    for (const j of joins) this.emit('join', { channel: this.channel, sub: j.sub, ...(j.info !== undefined ? { info: j.info } : {}) })
    for (const l of leaves) this.emit('leave', { channel: this.channel, sub: l.sub })
  }

  /** @internal */
  handleCount (members: number, connections: number): void {
    if (this.active) this.emit('count', { channel: this.channel, members, connections })
  }

  /** @internal The server refused the subscription for good. */
  handleFailure (error: HeraldError): void {
    if (!this.active) return
    this.state = 'failed'
    this.owner?.removeSubscription(this)
    this.emit('error', error)
  }

  /** @internal The client closed. */
  handleClose (): void {
    if (!this.active) return
    this.state = 'unsubscribed'
    this.emit('unsubscribed', { channel: this.channel, reason: 'closed' })
  }
}

import type { Backoff } from './backoff.js'
import type { Timers } from './clock.js'
import type { Link } from './connection.js'
import { decodeCursor, type Position } from './cursor.js'
import { HeraldError, TRANSIENT } from './errors.js'
import type { EventFrame, PollAnswer, SubscribedFrame, UnsubscribedFrame } from './frames.js'
import { Subscription, type SubscriptionOwner } from './subscription.js'
import type { CloseInfo, StreamChannel } from './transports/types.js'

export interface SubscriptionsOptions {
  owner: SubscriptionOwner
  link: Link
  timers: Timers
  retryBackoff: Backoff
  nextId: (kind: string) => string
}

/**
 * The client's subscriptions, by channel, and their bookkeeping on the current connection: subscribe frames on
 * WebSocket, the channel list of SSE and long-poll streams.
 */
export class Subscriptions {
  private readonly subs = new Map<string, Subscription>()
  /** Subscribe frame ids of the current WebSocket, to match their errors. */
  private readonly subscribeIds = new Map<string, string>()
  /** Channels a subscribe frame was sent for on the current WebSocket. */
  private readonly wsSubscribed = new Set<string>()

  constructor (private readonly options: SubscriptionsOptions) {}

  get (channel: string): Subscription | undefined { return this.subs.get(channel) }

  add (channel: string, since: Position | undefined, delta = false): Subscription {
    const sub = new Subscription(channel, this.options.owner, since, false, delta)
    this.subs.set(channel, sub)
    const t = this.options.link.active
    if (t !== undefined) {
      if (t.bidirectional) { if (this.options.link.open) this.sendSubscribe(sub) } else t.subscriptionsChanged({ added: channel })
    }
    return sub
  }

  remove (sub: Subscription): void {
    if (this.subs.get(sub.channel) !== sub) return
    this.subs.delete(sub.channel)
    const sent = this.wsSubscribed.delete(sub.channel)
    const t = this.options.link.active
    if (t === undefined) return
    if (t.bidirectional) {
      if (this.options.link.open && (sent || sub.server) && sub.state !== 'failed') t.send!({ type: 'unsubscribe', channel: sub.channel })
    } else {
      t.subscriptionsChanged({ removed: sub.channel })
    }
  }

  /** Active subscriptions with their last positions, for a stream to (re)open with. */
  channels (): StreamChannel[] {
    const out: StreamChannel[] = []
    for (const sub of this.subs.values()) {
      if (!sub.active) continue
      const c: StreamChannel = sub.position === undefined ? { channel: sub.channel } : { channel: sub.channel, since: sub.position }
      if (sub.server) c.server = true
      if (sub.delta) c.delta = true
      out.push(c)
    }
    return out
  }

  /** A WebSocket opened: subscribe to every channel of ours from its position (the server redoes its own). */
  subscribeAll (): void {
    for (const sub of this.subs.values()) if (!sub.server) this.sendSubscribe(sub)
  }

  /**
   * A subscription the server made (a `subscribed` frame with `server: true`, or a long-poll answer's `subscribed`):
   * confirms the one we have, or adopts a new one and tells the application (`onNew`), before any of its events.
   */
  serverSubscribed (frame: Omit<SubscribedFrame, 'type'>, onNew: (sub: Subscription) => void): void {
    const known = this.subs.get(frame.channel)
    if (known !== undefined) { known.handleSubscribed(frame); return }
    const sub = new Subscription(frame.channel, this.options.owner, undefined, true)
    this.subs.set(frame.channel, sub)
    onNew(sub)
    sub.handleSubscribed(frame)
  }

  /**
   * A WebSocket or SSE connection opened and the server named the channels it subscribes it to: a server-made
   * subscription of an earlier connection that is not among them (the server API made it, for that connection only)
   * is over.
   */
  serverChannels (channels: string[]): void {
    for (const sub of [...this.subs.values()]) {
      if (sub.server && sub.active && !channels.includes(sub.channel)) {
        sub.handleFailure(new HeraldError('HERALD_ERR_UNSUBSCRIBED', 'the server no longer subscribes this connection to it', { channel: sub.channel }))
      }
    }
  }

  /** The connection ended or was replaced: every subscription waits to be resumed. */
  disconnected (): void {
    this.subscribeIds.clear()
    this.wsSubscribed.clear()
    for (const sub of this.subs.values()) sub.handleDisconnect()
  }

  closeAll (): void {
    for (const sub of [...this.subs.values()]) sub.handleClose()
    this.subs.clear()
  }

  /** The server acknowledged frame `id` (a subscribe, if it is one of ours). */
  acked (id: string): void { this.subscribeIds.delete(id) }

  /** Error frame `id` answers one of our subscribes: that subscription fails or is retried. False when it is not one. */
  failed (id: string, error: HeraldError): boolean {
    const channel = this.subscribeIds.get(id)
    if (channel === undefined) return false
    this.subscribeIds.delete(id)
    this.subscribeError(channel, error)
    return true
  }

  subscribeError (channel: string, error: HeraldError): void {
    const sub = this.subs.get(channel)
    if (sub === undefined || error.code === 'HERALD_ERR_ALREADY_SUBSCRIBED') return
    this.wsSubscribed.delete(channel)
    if (TRANSIENT.has(error.code)) {
      // The bus is down or busy: try again later (SSE: the stream ends and the reconnect retries).
      sub.handleDisconnect()
      const { link, timers, retryBackoff } = this.options
      const t = link.active
      if (t?.bidirectional === true) timers.later(() => { if (link.active === t && this.subs.get(channel) === sub) this.sendSubscribe(sub) }, retryBackoff.next())
      return
    }
    sub.handleFailure(error)
  }

  onUnsubscribed (frame: UnsubscribedFrame): void {
    const sub = this.subs.get(frame.channel)
    if (sub === undefined || frame.reason === 'client') return
    this.wsSubscribed.delete(frame.channel)
    if (frame.resubscribe === true) {
      // The server lost its place in the channel: subscribe again from our last position (SSE: the stream ends
      // next, and the reconnect resumes from the cursor).
      sub.handleDisconnect()
      this.sendSubscribe(sub)
      return
    }
    sub.handleFailure(new HeraldError(frame.reason === 'forbidden' ? 'HERALD_ERR_FORBIDDEN' : 'HERALD_ERR_UNSUBSCRIBED', `unsubscribed by the server: ${frame.reason ?? 'no reason'}`, { channel: frame.channel }))
  }

  /** A stream was refused because of one of its channels: that subscription fails, the stream goes on without it. */
  onChannelRefused (info: CloseInfo): boolean {
    if (info.status === undefined || ![400, 403, 404, 409].includes(info.status) || info.errorCode === 'HERALD_ERR_ORIGIN_NOT_ALLOWED') return false
    const named = /channel (?:name: )?"?([A-Za-z0-9_.:@#,-]{1,128})/.exec(info.message ?? '')?.[1]
    const sub = named === undefined ? undefined : this.subs.get(named)
    if (sub === undefined) return false
    sub.handleFailure(new HeraldError(info.errorCode ?? 'HERALD_ERR_FORBIDDEN', info.message ?? info.reason, { status: info.status, channel: sub.channel }))
    return true
  }

  onPollAnswer (answer: PollAnswer, channels: string[], onNew: (sub: Subscription) => void): void {
    // Ended by the server API: as an `unsubscribed` frame would say on the other transports.
    for (const u of answer.unsubscribed ?? []) this.onUnsubscribed({ type: 'unsubscribed', channel: u.channel, reason: u.reason })
    // Made by the server (the token's channels, the server API): as `subscribed` frames with `server: true` would say.
    for (const s of answer.subscribed ?? []) this.serverSubscribed(s, onNew)
    channels = [...channels, ...(answer.subscribed ?? []).map((s) => s.channel)]
    const recovered = new Set<string>()
    for (const r of answer.recovery ?? []) {
      const sub = this.subs.get(r.channel)
      if (sub === undefined) continue
      sub.handleSubscribed({ offset: r.offset, epoch: r.epoch, recovered: false, reason: r.reason, replayed: 0 })
      recovered.add(r.channel)
    }
    const cursor = decodeCursor(answer.cursor, channels)
    // Confirm pending subscriptions the server has positioned, before their events.
    for (const channel of channels) {
      const sub = this.subs.get(channel)
      const pos = cursor?.get(channel)
      if (sub === undefined || sub.state !== 'pending' || recovered.has(channel) || pos === undefined) continue
      const mine = answer.events.filter((e) => e.channel === channel)
      if (sub.position !== undefined) {
        sub.handleSubscribed({ offset: sub.position.offset, epoch: sub.position.epoch, recovered: true, replayed: mine.length })
      } else {
        const start = mine.length > 0 ? { offset: mine[0].offset - 1, epoch: mine[0].epoch } : pos
        sub.handleSubscribed({ offset: start.offset, epoch: start.epoch, replayed: 0 })
      }
    }
    for (const event of answer.events) this.subs.get(event.channel)?.handleEvent(event as EventFrame)
  }

  private sendSubscribe (sub: Subscription): void {
    const t = this.options.link.active
    if (t?.bidirectional !== true || !this.options.link.open || this.wsSubscribed.has(sub.channel) || !sub.active) return
    this.wsSubscribed.add(sub.channel)
    const id = this.options.nextId('s')
    this.subscribeIds.set(id, sub.channel)
    t.send!({ type: 'subscribe', channel: sub.channel, since: sub.position, id, ...(sub.delta ? { delta: true as const } : {}) })
  }
}

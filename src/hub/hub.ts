import type { Logger } from 'pino'
import type { Broker, Publication } from '../bus/broker.js'
import type { StreamPosition } from '../protocol/cursor.js'
import type { PresenceTracker } from '../presence/tracker.js'
import type { Namespaces } from '../namespaces.js'
import type { Sink, SubscribeResult } from './sink.js'
import { recoveryFailure } from './recovery.js'
import { REPLAY_PAGE, REPLAY_PAGE_BYTES, replay, type Subscription } from './replay.js'
import { ChannelState, type HubObserver } from './channel.js'
import { PositionCheck } from './positioning.js'
import { Errors } from '../errors.js'

export type { Sink, SubscribeResult, RecoveryFailure } from './sink.js'

export interface HubOptions {
  broker: Broker
  log: Logger
  namespaces?: Namespaces
  presence?: PresenceTracker
  /** Told of every live publication dispatched on this node, and of bus reconnects (metrics). */
  observer?: HubObserver
  /** POSITION_CHECK: how often idle channels are checked against the bus (0: never). */
  positionCheckMs?: number
}

export type { HubObserver }

/** Told when a channel gets its first local subscriber (`occupied`) and when it loses its last (webhooks). */
export type OccupancyListener = (channel: string, occupied: boolean) => void

/**
 * Channel -> local subscribers. Subscribes to the bus on the first local subscriber and unsubscribes after
 * the last; keeps, per channel, the last offset dispatched so that every subscriber sees each publication once,
 * in order, and a gap (missed pub/sub message, bus reconnect) is filled from history before anything after it
 * is delivered.
 */
export class Hub {
  private readonly channels = new Map<string, ChannelState>()
  /** Per channel, the tail of its chain of bus subscribe/unsubscribe calls, so they reach the bus in order. */
  private readonly busOps = new Map<string, Promise<void>>()
  /** Subscribes under way, per channel with a subscriber cap. */
  private readonly joining = new Map<string, number>()
  private readonly positions: PositionCheck
  private occupancy?: OccupancyListener

  constructor (private readonly options: HubOptions) {
    // Presence frames (batched joins and leaves) go to the channel's local subscribers, serialised once.
    options.presence?.setBroadcast((channel, frame) => this.broadcast(channel, frame))
    options.broker.setHandler({
      onPublication: (pub) => this.onPublication(pub),
      onReconnect: (channels) => {
        options.observer?.reconnected()
        const states = channels === undefined ? [...this.channels.values()] : channels.map((c) => this.channels.get(c))
        for (const state of states) {
          if (state === undefined) continue
          // A catch-up already under way may have read history before the drop: run another after it.
          if (state.phase === 'syncing') state.resyncAgain = true
          else if (state.phase === 'live') this.resync(state, 'reconnect')
        }
      }
    })
    this.positions = new PositionCheck(options.broker, options.positionCheckMs ?? 0, () => this.channels.values(), (state) => {
      this.options.log.warn({ channel: state.name, offset: state.offset, epoch: state.epoch }, 'channel behind the bus (a lost subscription?): subscribing again and catching up')
      void this.busOp(state.name, () => this.options.broker.subscribe(state.name)).catch(() => {})
      this.resync(state, 'position')
    })
  }

  setOccupancyListener (listener: OccupancyListener): void { this.occupancy = listener }

  /** Checks the channels idle for `idleMs` against the bus now (the timer does it every POSITION_CHECK seconds). */
  async checkPositions (idleMs?: number): Promise<void> { await this.positions.run(idleMs) }

  get channelCount (): number { return this.channels.size }

  subscriberCount (channel: string): number { return this.channels.get(channel)?.subs.size ?? 0 }

  /** The channels with local subscribers, each with how many (the server API's channel list). */
  * subscribedChannels (): IterableIterator<[string, number]> {
    for (const [name, state] of this.channels) if (state.subs.size > 0) yield [name, state.subs.size]
  }

  get subscriptionCount (): number {
    let n = 0
    for (const state of this.channels.values()) n += state.subs.size
    return n
  }

  /**
   * Subscribes `sink` to `channel`. Without `since`, delivery starts with the next publication. With `since`,
   * the events after it are replayed from history first, seamlessly followed by live ones (live events are
   * buffered during the history read and merged by offset), or the result says why they cannot be. `sub`: an object
   * of the sink's to keep as this subscription (its fields are set here), passed back with every delivery.
   */
  async subscribe (sink: Sink, channel: string, since?: StreamPosition, sub?: Subscription): Promise<SubscribeResult> {
    if (this.channels.get(channel)?.subs.has(sink) === true) throw new Errors.ALREADY_SUBSCRIBED(channel)
    const ns = this.options.namespaces?.of(channel)
    const maxSubscribers = ns?.maxSubscribers ?? 0
    if (maxSubscribers === 0) return await this.join(sink, channel, since, sub)
    // Subscribes still on their way count too, so a burst cannot slip past the cap while they are.
    const joining = this.joining.get(channel) ?? 0
    if (this.subscriberCount(channel) + joining >= maxSubscribers) throw new Errors.CHANNEL_FULL(channel, `${maxSubscribers} subscribers on this node`)
    this.joining.set(channel, joining + 1)
    try {
      return await this.join(sink, channel, since, sub)
    } finally {
      const left = (this.joining.get(channel) ?? 1) - 1
      if (left > 0) this.joining.set(channel, left)
      else this.joining.delete(channel)
    }
  }

  private async join (sink: Sink, channel: string, since?: StreamPosition, given?: Subscription): Promise<SubscribeResult> {
    const ns = this.options.namespaces?.of(channel)
    const { presence } = this.options
    const member = presence?.enabled(channel) === true ? sink.member : undefined
    if (member !== undefined && !(await presence!.join(channel, member))) throw new Errors.CHANNEL_FULL(channel, `${ns?.maxMembers ?? 0} members`)
    let state: ChannelState
    try {
      state = await this.activate(channel)
    } catch (err) {
      if (member !== undefined) presence!.leave(channel, member)
      throw err
    }
    if (state.subs.has(sink)) {
      if (member !== undefined) presence!.leave(channel, member)
      this.releaseIfIdle(state)
      throw new Errors.ALREADY_SUBSCRIBED(channel)
    }
    const sub: Subscription = given ?? { offset: 0, buffer: null, member: undefined }
    sub.offset = state.offset
    sub.buffer = null
    sub.member = member
    // A latest-value channel gives a new subscriber its latest event first: a replay from just before it.
    const latest = since === undefined && ns?.latest === true && state.offset > 0
    if (latest) since = { offset: state.offset - 1, epoch: state.epoch }
    if (since === undefined) {
      state.subs.set(sink, sub)
      if (state.subs.size === 1) this.occupancy?.(channel, true)
      this.releaseIfIdle(state)
      const result: SubscribeResult = { channel, offset: state.offset, epoch: state.epoch, replayed: 0 }
      sink.subscribed(result)
      return result
    }
    sub.buffer = []
    state.subs.set(sink, sub)
    if (state.subs.size === 1) this.occupancy?.(channel, true)
    this.releaseIfIdle(state)
    const current = (): boolean => this.channels.get(channel) === state && state.subs.get(sink) === sub
    try {
      return await replay({
        broker: this.options.broker,
        channel,
        historyTtlSeconds: ns?.historyTtl,
        sub,
        current,
        // Not a resume: whether history still held that event is no recovery to report.
        subscribed: (result) => sink.subscribed(latest ? { channel: result.channel, offset: result.offset, epoch: result.epoch, replayed: result.replayed } : result),
        deliver: (pub) => state.deliverTo(sink, sub, pub, true),
        lost: (reason) => { this.unsubscribe(sink, channel); sink.lost(channel, reason) },
        turn: sink.replayTurn?.bind(sink) ?? (async () => () => {}),
        warn: (msg, err) => this.options.log.warn({ err: (err as Error).message, channel }, msg)
      }, since)
    } catch (err) {
      if (current()) this.unsubscribe(sink, channel)
      throw err
    }
  }

  /** Removes a subscription; returns false when there was none. */
  unsubscribe (sink: Sink, channel: string): boolean {
    const state = this.channels.get(channel)
    const sub = state?.subs.get(sink)
    if (state === undefined || sub === undefined) return false
    state.subs.delete(sink)
    if (state.subs.size === 0) this.occupancy?.(channel, false)
    if (sub.member !== undefined) this.options.presence?.leave(channel, sub.member)
    this.releaseIfIdle(state)
    return true
  }

  /** Sends a frame to every local subscriber of a channel that is past its replay. */
  broadcast (channel: string, frame: string): void {
    const state = this.channels.get(channel)
    if (state === undefined) return
    for (const [sink, sub] of state.subs) if (sub.buffer === null) sink.notify?.(channel, frame)
  }

  /** Stops everything (shutdown): channels are forgotten, the bus is left to its owner to close. */
  close (): void {
    this.positions.stop()
    for (const state of this.channels.values()) clearTimeout(state.retry)
    this.channels.clear()
  }

  private async activate (channel: string): Promise<ChannelState> {
    let state = this.channels.get(channel)
    if (state === undefined) {
      const created = new ChannelState(channel, this.options.observer)
      state = created
      this.channels.set(channel, created)
      created.ready = this.busOp(channel, () => this.options.broker.subscribe(channel)).then(async () => {
        const { top } = await this.options.broker.history(channel, { since: 0, limit: 0 })
        created.offset = top.offset
        created.epoch = top.epoch
        created.phase = 'live'
        created.lastDispatch = Date.now()
        if (created.resyncAgain) this.resync(created, 'gap')
        else this.drainPending(created)
      })
      created.ready.catch(() => {
        if (this.channels.get(channel) === created) this.channels.delete(channel)
        void this.busOp(channel, () => this.options.broker.unsubscribe(channel)).catch(() => {})
      })
    }
    state.waiters++
    try {
      await state.ready
    } finally {
      state.waiters--
    }
    return state
  }

  private releaseIfIdle (state: ChannelState): void {
    if (state.subs.size > 0 || state.waiters > 0 || this.channels.get(state.name) !== state) return
    this.channels.delete(state.name)
    clearTimeout(state.retry)
    this.busOp(state.name, () => this.options.broker.unsubscribe(state.name)).catch((err) => {
      this.options.log.warn({ err, channel: state.name }, 'bus unsubscribe failed')
    })
  }

  private busOp (channel: string, op: () => Promise<void>): Promise<void> {
    const prev = this.busOps.get(channel) ?? Promise.resolve()
    const next = prev.catch(() => {}).then(op)
    const tail = next.catch(() => {})
    this.busOps.set(channel, tail)
    void tail.then(() => { if (this.busOps.get(channel) === tail) this.busOps.delete(channel) })
    return next
  }

  private onPublication (pub: Publication): void {
    const state = this.channels.get(pub.channel)
    if (state === undefined) return
    if (state.phase !== 'live') { state.hold(pub); return }
    if (state.accept(pub)) this.resync(state, 'gap')
  }

  /**
   * Brings a channel back in step with the bus after a gap or a reconnect: reads what was missed from history
   * and dispatches it before anything newer. If the stream was reset (new epoch) or history no longer reaches
   * back, every subscriber is told it lost its place.
   */
  private drainPending (state: ChannelState): void {
    if (state.drainPending()) this.resync(state, 'gap')
  }

  private resync (state: ChannelState, why: 'gap' | 'reconnect' | 'position' | 'retry'): void {
    if (state.phase === 'syncing' && why !== 'retry') return
    if (why !== 'retry') this.options.observer?.caughtUp(why)
    state.phase = 'syncing'
    state.resyncAgain = false
    const channel = state.name
    this.options.broker.history(channel, { since: state.offset, limit: REPLAY_PAGE, maxBytes: REPLAY_PAGE_BYTES, historyTtlSeconds: this.options.namespaces?.of(channel)?.historyTtl }).then((history) => {
      if (this.channels.get(channel) !== state) return
      const { top, publications } = history
      const reason = recoveryFailure(state, history)
      if (reason === 'offset_ahead' && this.options.broker.restartEpoch !== undefined) {
        // The bus lost events this node has delivered: their offsets must never name other events. Restart the
        // epoch (once, whichever node gets there first), then catch up into it — every subscriber is told.
        this.options.log.warn({ channel, offset: state.offset, epoch: state.epoch, top }, 'the bus went backwards (a failover or restart lost events): starting a new epoch')
        this.options.broker.restartEpoch(channel, { offset: state.offset, epoch: state.epoch }).then(
          () => { if (this.channels.get(channel) === state) this.resync(state, 'retry') },
          (err) => { if (this.channels.get(channel) === state) this.retryResync(state, err) })
        return
      }
      if (reason !== undefined) {
        this.options.log.warn({ channel, reason, offset: state.offset, epoch: state.epoch, top }, 'channel lost its position; subscribers must resubscribe')
        state.offset = top.offset
        state.epoch = top.epoch
        state.pending = state.pending.filter((p) => p.epoch === top.epoch && p.offset > top.offset)
        const subs = [...state.subs]
        state.subs.clear()
        if (subs.length > 0) this.occupancy?.(channel, false)
        state.phase = 'live'
        for (const [sink, sub] of subs) {
          if (sub.member !== undefined) this.options.presence?.leave(channel, sub.member)
          sink.lost(channel, reason)
        }
        this.releaseIfIdle(state)
        this.drainPending(state)
        return
      }
      // From the empty position, the stream the first publish created is this channel's now.
      state.epoch = top.epoch
      for (const pub of publications) {
        if (pub.offset === state.offset + 1) { state.offset = pub.offset; state.dispatch(pub) }
      }
      state.phase = 'live'
      // A page that did not reach the top (limit) or a reconnect meanwhile: catch up once more.
      if (state.resyncAgain || state.offset < top.offset) { this.resync(state, 'retry'); return }
      this.drainPending(state)
    }, (err) => { if (this.channels.get(channel) === state) this.retryResync(state, err) })
  }

  private retryResync (state: ChannelState, err: unknown): void {
    this.options.log.warn({ err: (err as Error).message, channel: state.name }, 'history catch-up failed; retrying')
    clearTimeout(state.retry)
    state.retry = setTimeout(() => { if (this.channels.get(state.name) === state) this.resync(state, 'retry') }, 500).unref()
  }
}

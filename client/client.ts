import { isValidChannel } from '../src/protocol/channel.js'
import { TRANSPORTS } from '../src/protocol/transports.js'
import { Backoff } from './backoff.js'
import { Timers, systemClock } from './clock.js'
import { Connection } from './connection.js'
import type { Position } from './cursor.js'
import { Emitter } from './emitter.js'
import { ClientErrorCodes, HeraldError } from './errors.js'
import type { ErrorFrame, PresenceFrame, ServerFrame } from './frames.js'
import type { ClientEvents, ClientOptions, HistoryPage, PresenceInfo, PublishAck, PublishOptions } from './options.js'
import { Publisher } from './publisher.js'
import { Requests } from './requests.js'
import { Rest } from './rest.js'
import type { ConnectionState } from './state.js'
import type { HeraldEvent, Subscription, SubscriptionOwner } from './subscription.js'
import { Subscriptions } from './subscriptions.js'
import { Tokens } from './tokens.js'
import type { FetchLike, OpenInfo, Transport, TransportName, WebSocketConstructor } from './transports/types.js'

export type { ClientOptions, PublishOptions, PublishAck, PresenceInfo, HistoryPage, ClientEvents } from './options.js'

const DEFAULT_TRANSPORTS: TransportName[] = [...TRANSPORTS]

/**
 * The Herald client: one logical connection over the best transport that works, surviving drops, restarts, token
 * expiry and transport switches with every event delivered once and in order. See docs/client.md.
 */
export class HeraldClient extends Emitter<ClientEvents> implements SubscriptionOwner {
  /** The HTTP base URL. */
  readonly url: string
  private readonly conn: Connection
  private readonly tokens: Tokens
  private readonly rest: Rest
  private readonly subs: Subscriptions
  private readonly publisher: Publisher
  private readonly requests: Requests
  /** Timers and waits of the client itself (retries), cancelled by close(). */
  private readonly timers: Timers
  private lastTransportAnnounced: TransportName | null = null
  /** Frame ids (requests and subscribes) of this client. */
  private seq = 0

  constructor (options: ClientOptions) {
    super()
    if (typeof options?.url !== 'string' || options.url === '') throw new TypeError('createClient: `url` is required')
    if (options.token === undefined && options.getToken === undefined) throw new TypeError('createClient: `token` or `getToken` is required')
    this.url = options.url.replace(/\/+$/, '').replace(/^ws(s?):\/\//, 'http$1://')
    const clock = options.clock ?? systemClock
    const globals = globalThis as { WebSocket?: WebSocketConstructor, fetch?: FetchLike }
    const fetchFn = options.fetch ?? (typeof globals.fetch === 'function' ? globals.fetch.bind(globalThis) : undefined)
    if (fetchFn === undefined) throw new TypeError('createClient: no fetch available; pass `fetch`')
    const WebSocketCtor = options.WebSocket ?? globals.WebSocket
    const wanted = options.transports ?? DEFAULT_TRANSPORTS
    for (const name of wanted) if (!DEFAULT_TRANSPORTS.includes(name)) throw new TypeError(`createClient: unknown transport ${String(name)}`)
    // Without a WebSocket class (Node 20 without the `ws` option) the list starts at SSE.
    const transports = [...new Set(wanted)].filter((name) => name !== 'websocket' || WebSocketCtor !== undefined)
    if (transports.length === 0) throw new TypeError('createClient: no usable transport (websocket needs a WebSocket class)')
    const settings = {
      connectTimeout: options.connectTimeout ?? 10_000,
      heartbeat: options.heartbeat ?? {},
      pollTimeout: options.pollTimeout ?? 25,
      sendRate: options.sendRate ?? { rate: 40, burst: 80 }
    }
    const backoff = new Backoff(options.backoff, () => clock.random())
    const retryBackoff = new Backoff(options.backoff, () => clock.random())
    const nextId = (kind: string): string => `${kind}${++this.seq}`
    this.timers = new Timers(clock)
    this.tokens = new Tokens({
      token: options.token,
      getToken: options.getToken,
      clock,
      refreshBefore: options.refreshBefore ?? 30_000,
      refresh: options.refresh ?? true,
      closed: () => this.state === 'closed',
      deliver: async (token) => { await this.handOver(token) },
      error: (err) => this.emit('error', err)
    })
    this.rest = new Rest(this.url, fetchFn, this.tokens, clock, settings.connectTimeout)
    this.conn = new Connection({
      url: this.url,
      clock,
      fetch: fetchFn,
      WebSocket: WebSocketCtor,
      transports,
      settings,
      backoff,
      stableAfter: options.stableAfter ?? 5000,
      upgradeInterval: options.upgradeInterval ?? 60_000,
      tokens: this.tokens,
      rest: this.rest,
      host: {
        channels: () => this.subs.channels(),
        frame: (frame) => this.onFrame(frame),
        pollAnswer: (answer, channels) => this.subs.onPollAnswer(answer, channels, (sub) => this.emit('subscribed', sub)),
        channelRefused: (info) => this.subs.onChannelRefused(info),
        opened: (t, info) => this.announce(t, info),
        replaced: (t, info) => { this.subs.disconnected(); this.announce(t, info) },
        lost: () => {
          this.publisher.requeueInflight()
          this.requests.rejectAll(new HeraldError(ClientErrorCodes.DISCONNECTED, 'the connection was lost before the answer'))
          this.subs.disconnected()
        },
        terminate: (reason, error) => this.terminate(reason, error),
        error: (error) => this.emit('error', error),
        change: (change) => this.emit('state', change),
        retry: (info) => this.emit('reconnect', info)
      }
    })
    this.subs = new Subscriptions({ owner: this, link: this.conn, timers: this.timers, retryBackoff, nextId })
    this.publisher = new Publisher({
      queue: options.offlineQueue,
      link: this.conn,
      state: () => this.state,
      rest: this.rest,
      tokens: this.tokens,
      timers: this.timers,
      retryBackoff
    })
    this.requests = new Requests(this.conn, nextId)
    // In a microtask, so that listeners attached right after createClient() see the first transition.
    if (options.autoConnect !== false) queueMicrotask(() => this.connect())
  }

  /** disconnected, connecting, connected, reconnecting or closed. */
  get state (): ConnectionState { return this.conn.life.state }

  /** The transport in use or being tried (null before the first attempt and after close). */
  get transport (): TransportName | null { return this.conn.transport }

  /** Publishes waiting to be sent or acknowledged. */
  get pendingPublishes (): number { return this.publisher.pending }

  /** Starts connecting (only needed with `autoConnect: false`). */
  connect (): void {
    if (this.state === 'disconnected') this.conn.life.start('connect')
  }

  /** Closes for good: no reconnect; waiting publishes are rejected with HERALD_CLIENT_CLOSED. */
  close (): void {
    this.shutdown('client', new HeraldError(ClientErrorCodes.CLOSED, 'the client was closed'))
  }

  /**
   * Subscribes to `channel` (the same Subscription is returned for a channel already subscribed). With `since`,
   * events after that position are replayed first (or `recovery-failed` tells they cannot be).
   */
  subscribe (channel: string, options: { since?: Position, delta?: boolean } = {}): Subscription {
    if (this.state === 'closed') throw new HeraldError(ClientErrorCodes.CLOSED, 'the client is closed')
    if (!isValidChannel(channel)) throw new HeraldError('HERALD_ERR_BAD_CHANNEL', `Invalid channel name: ${JSON.stringify(channel)}`, { status: 400, channel })
    return this.subs.get(channel) ?? this.subs.add(channel, options.since, options.delta === true)
  }

  /** The subscription of `channel`, if any. */
  subscription (channel: string): Subscription | undefined { return this.subs.get(channel) }

  /**
   * Publishes an event. Resolves with its offset once stored. While the client is not connected the publish waits
   * in the offline queue; it is sent (WebSocket frame, or REST on SSE / long-poll) with an idempotency id that is
   * reused on every retry, so a publish whose acknowledgement was lost is stored once.
   */
  async publish (channel: string, data: unknown, options: PublishOptions = {}): Promise<PublishAck> {
    if (this.state === 'closed') throw new HeraldError(ClientErrorCodes.CLOSED, 'the client is closed')
    if (!isValidChannel(channel)) throw new HeraldError('HERALD_ERR_BAD_CHANNEL', `Invalid channel name: ${JSON.stringify(channel)}`, { status: 400, channel })
    return await this.publisher.publish(channel, data, options)
  }

  /** Who is subscribed to `channel` (the namespace must enable presence). */
  async presence (channel: string): Promise<PresenceInfo> {
    if (this.state === 'closed') throw new HeraldError(ClientErrorCodes.CLOSED, 'the client is closed')
    if (this.conn.active?.bidirectional === true && this.conn.open) {
      const frame = await this.requests.send<PresenceFrame>({ type: 'presence', channel })
      return { channel: frame.channel, members: frame.members, count: frame.count }
    }
    return await this.rest.get<PresenceInfo>(`/v1/channels/${encodeURIComponent(channel)}/presence`)
  }

  /** Events of `channel` after offset `since` (REST), oldest first; `limit: 0` gives just the newest offset and epoch. */
  async history (channel: string, options: { since?: number, limit?: number } = {}): Promise<HistoryPage> {
    const qs = new URLSearchParams({ since: String(options.since ?? 0) })
    if (options.limit !== undefined) qs.set('limit', String(options.limit))
    const page = await this.rest.get<Omit<HistoryPage, 'events'> & { events: Array<HeraldEvent & { type?: string }> }>(`/v1/channels/${encodeURIComponent(channel)}/events?${qs.toString()}`)
    return { ...page, events: page.events.map(({ type: _type, ...event }) => event) }
  }

  /** @internal Called by Subscription.unsubscribe() and on a refused subscription. */
  removeSubscription (sub: Subscription): void { this.subs.remove(sub) }

  /** Common to a fresh connection and a promoted (upgraded) one. */
  private announce (t: Transport, info: OpenInfo): void {
    // A 'state' listener may have closed the client already.
    if (t !== this.conn.active) return
    if (this.lastTransportAnnounced !== t.name) {
      const from = this.lastTransportAnnounced
      this.lastTransportAnnounced = t.name
      this.emit('transport', { from, to: t.name })
    }
    this.emit('connected', { transport: t.name, ...(info.client !== undefined ? { client: info.client } : {}), ...(info.sub !== undefined ? { sub: info.sub } : {}) })
    if (t !== this.conn.active) return
    if (info.channels !== undefined) this.subs.serverChannels(info.channels)
    if (t.bidirectional) this.subs.subscribeAll()
    this.tokens.schedule()
    this.conn.scheduleUpgrade()
    this.publisher.flush()
  }

  /**
   * Hands a renewed token to the open connection without dropping it: a `refresh` frame on WebSocket, a reopen
   * from the current cursor on SSE, the next request on long-poll.
   */
  private async handOver (token: string): Promise<void> {
    const t = this.conn.active
    if (t === undefined || !this.conn.open) return
    if (!t.bidirectional) { t.tokenChanged(); return }
    try {
      await this.requests.send({ type: 'refresh', token })
    } catch (err) {
      // Refused (or the connection dropped): the next connection uses the new token anyway.
      if (err instanceof HeraldError && err.code !== ClientErrorCodes.DISCONNECTED) this.emit('error', err)
    }
  }

  private onFrame (frame: ServerFrame): void {
    switch (frame.type) {
      case 'subscribed':
        if (frame.server === true) this.subs.serverSubscribed(frame, (sub) => this.emit('subscribed', sub))
        else this.subs.get(frame.channel)?.handleSubscribed(frame)
        break
      case 'event': this.subs.get(frame.channel)?.handleEvent(frame); break
      case 'unsubscribed': this.subs.onUnsubscribed(frame); break
      case 'ack':
        if (this.publisher.acked(frame)) break
        this.requests.resolve(frame.id, frame)
        this.subs.acked(frame.id)
        break
      case 'error': this.onErrorFrame(frame); break
      case 'presence': if (frame.id !== undefined) this.requests.resolve(frame.id, frame); break
      case 'presence_diff': this.subs.get(frame.channel)?.handlePresence(frame.joins, frame.leaves); break
      case 'presence_count': this.subs.get(frame.channel)?.handleCount(frame.members, frame.connections); break
      default: break
    }
  }

  private onErrorFrame (frame: ErrorFrame): void {
    const error = new HeraldError(frame.code, frame.message, { channel: frame.channel, ...(frame.app !== undefined ? { app: frame.app } : {}) })
    if (frame.id !== undefined) {
      if (this.publisher.failed(frame.id, error) || this.requests.reject(frame.id, error) || this.subs.failed(frame.id, error)) return
    } else if (frame.channel !== undefined && this.subs.get(frame.channel) !== undefined) {
      // SSE: a subscribe of the stream failed.
      this.subs.subscribeError(frame.channel, error)
      return
    }
    this.emit('error', error)
  }

  private terminate (reason: string, error: HeraldError): void {
    if (this.state === 'closed') return
    this.shutdown(reason, error)
    this.emit('error', error)
  }

  private shutdown (reason: string, error: HeraldError): void {
    if (!this.conn.life.close(reason)) return
    this.conn.close()
    this.tokens.stop()
    this.timers.cancel()
    this.publisher.rejectAll(error)
    this.requests.rejectAll(error)
    this.subs.closeAll()
  }
}

/** Creates a client. See ClientOptions and docs/client.md. */
export function createClient (options: ClientOptions): HeraldClient {
  return new HeraldClient(options)
}

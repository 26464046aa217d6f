import { isValidChannel } from '../src/protocol/channel.js'
import { Backoff, type BackoffOptions } from './backoff.js'
import { type Clock, type TimerHandle, systemClock } from './clock.js'
import { CloseCodes, closeAction } from './codes.js'
import { decodeCursor, type Position } from './cursor.js'
import { Emitter } from './emitter.js'
import { ClientErrorCodes, HeraldError } from './errors.js'
import type { AckFrame, ClientFrame, ErrorFrame, EventFrame, PollAnswer, PresenceFrame, PresenceMember, ServerFrame, UnsubscribedFrame } from './frames.js'
import { tokenExpiry } from './jwt.js'
import { OfflineQueue, type OfflineQueueOptions } from './queue.js'
import { Reconnector, type RetryInfo, type RetryMode } from './reconnect.js'
import type { ConnectionState, StateChange } from './state.js'
import { Subscription, type HeraldEvent, type SubscriptionOwner } from './subscription.js'
import { LongPollTransport } from './transports/long-poll.js'
import { SseTransport } from './transports/sse.js'
import {
  type CloseInfo, type FetchLike, type OpenInfo, type ProbeResult, type Transport, type TransportHost, type TransportName,
  type TransportSettings, type WebSocketConstructor, describe, errorOf
} from './transports/types.js'
import { WebSocketTransport } from './transports/websocket.js'

export interface ClientOptions {
  /** Herald's base URL: `https://rt.example.com` (or with a prefix, `https://example.com/realtime`). ws:// and wss:// work too. */
  url: string
  /** A JWT. Without `getToken` it cannot be renewed: when it expires the client closes. */
  token?: string
  /**
   * Returns a fresh JWT (e.g. from your backend). Called to connect when `token` is absent, some seconds before the
   * current token's `exp` (the connection is extended with a `refresh` frame, subscriptions untouched), and when the
   * server refuses a token as expired.
   */
  getToken?: () => string | Promise<string>
  /** Transports in order of preference (default all three: websocket, sse, long-poll). */
  transports?: TransportName[]
  /** Reconnection backoff, ms (full jitter; defaults min 500, max 30000, factor 2). */
  backoff?: BackoffOptions
  /** Publishes held while they cannot be sent (default max 1000, overflow `reject-oldest`). */
  offlineQueue?: OfflineQueueOptions
  /** A WebSocket class; default `globalThis.WebSocket`. Node 20 has none: pass the `ws` package's class. */
  WebSocket?: WebSocketConstructor
  /** Default `globalThis.fetch`. */
  fetch?: FetchLike
  /** Time source, for tests. */
  clock?: Clock
  /** Connect now (default) or on `connect()`. */
  autoConnect?: boolean
  /** How long a connection attempt may take before it counts as failed, ms (default 10000). */
  connectTimeout?: number
  /**
   * Dead-connection detection, ms. Defaults come from the server's `pingInterval`: a `ping` frame every interval,
   * dead after 2 × interval + 5 s without any message.
   */
  heartbeat?: { interval?: number, timeout?: number }
  /** A connection that stays up this long resets the backoff, ms (default 5000). */
  stableAfter?: number
  /** While on a fallback transport, try the preferred one again this often, ms (default 60000; 0 = never). */
  upgradeInterval?: number
  /** Renew the token this long before its `exp`, ms (default 30000, at most half its remaining life). */
  refreshBefore?: number
  /** Renew tokens before they expire (default true; needs `getToken`). */
  refresh?: boolean
  /** Long-poll wait, seconds (default 25; the server caps it at POLL_TIMEOUT_MAX). */
  pollTimeout?: number
  /** Client-side pacing of WebSocket frames (default 40 per second, bursts of 80: under the server's default WS_RATE / WS_BURST). */
  sendRate?: { rate: number, burst: number }
}

export interface PublishOptions {
  /** Event name. */
  event?: string
  /** Idempotency id; generated when absent. A retry of the same publish reuses it, so it is stored once. */
  id?: string
}

export interface PublishAck {
  channel: string
  offset: number
  epoch: string
  /** True when the id had been stored already (a retry): this is the first result. */
  duplicate: boolean
}

export interface PresenceInfo { channel: string, members: PresenceMember[], count: { members: number, connections: number } }

export interface HistoryPage { channel: string, epoch: string, offset: number, earliest: number, truncated: boolean, events: HeraldEvent[] }

export interface ClientEvents {
  /** Every transition of the connection state, with its reason. */
  state: StateChange
  /** The transport in use changed (fallback, or an upgrade back to WebSocket). */
  transport: { from: TransportName | null, to: TransportName }
  /** A connection opened (also after a transport switch). */
  connected: { transport: TransportName, client?: string, sub?: string }
  /** A reconnection attempt is scheduled in `delay` ms. */
  reconnect: RetryInfo
  /** An error that is not about one publish or subscription (those reject / go to the subscription). */
  error: HeraldError
}

interface PendingPublish {
  id: string
  channel: string
  data: unknown
  event?: string
  attempts: number
  settled: boolean
  resolve: (ack: PublishAck) => void
  reject: (err: HeraldError) => void
}

interface PendingRequest { resolve: (frame: any) => void, reject: (err: HeraldError) => void }

const DEFAULT_TRANSPORTS: TransportName[] = ['websocket', 'sse', 'long-poll']
/** Error codes worth retrying with the same idempotency id (the publish may or may not be stored). */
const TRANSIENT = new Set(['HERALD_ERR_BUS_UNAVAILABLE', 'HERALD_ERR_RATE_LIMITED', 'HERALD_ERR_DRAINING', 'HERALD_ERR_INTERNAL'])
const MAX_PUBLISH_ATTEMPTS = 10
const MAX_AUTH_RETRIES = 3
const MAX_TIMER = 0x7fffffff

/**
 * The Herald client: one logical connection over the best transport that works, surviving drops, restarts, token
 * expiry and transport switches with every event delivered once and in order. See docs/client.md.
 */
export class HeraldClient extends Emitter<ClientEvents> implements SubscriptionOwner {
  /** The HTTP base URL. */
  readonly url: string
  private readonly clock: Clock
  private readonly fetchFn: FetchLike
  private readonly WebSocketCtor: WebSocketConstructor | undefined
  private readonly transportList: TransportName[]
  private readonly settings: TransportSettings
  private readonly backoff: Backoff
  private readonly retryBackoff: Backoff
  private readonly life: Reconnector
  private readonly getToken: (() => string | Promise<string>) | undefined
  private readonly refreshBefore: number
  private readonly refreshEnabled: boolean
  private readonly upgradeInterval: number
  private readonly subs = new Map<string, Subscription>()
  private readonly queue: OfflineQueue<PendingPublish>
  /** Publishes sent over the current WebSocket and not acknowledged yet, in send order. */
  private readonly inflight = new Map<string, PendingPublish>()
  /** Presence and refresh requests over the current WebSocket, by frame id. */
  private readonly requests = new Map<string, PendingRequest>()
  /** Subscribe frame ids of the current WebSocket, to match their errors. */
  private readonly subscribeIds = new Map<string, string>()
  /** Channels a subscribe frame was sent for on the current WebSocket. */
  private readonly wsSubscribed = new Set<string>()
  private active: Transport | undefined
  private activeOpen = false
  private lastTransport: TransportName | null = null
  private trial: Transport | undefined
  private trialLevel = 0
  private level = 0
  private currentToken: string | undefined
  private tokenPromise: Promise<string> | undefined
  private refreshTimer: TimerHandle | undefined
  private upgradeTimer: TimerHandle | undefined
  private authFailures = 0
  private restBusy = false
  private restItem: PendingPublish | undefined
  private attemptGen = 0
  private seq = 0
  private readonly idPrefix: string
  private lastTransportAnnounced: TransportName | null = null
  /** Timers and waits of the client itself (retries), cancelled by close(). */
  private readonly timers = new Set<TimerHandle>()
  private readonly waits = new Set<() => void>()

  constructor (options: ClientOptions) {
    super()
    if (typeof options?.url !== 'string' || options.url === '') throw new TypeError('createClient: `url` is required')
    if (options.token === undefined && options.getToken === undefined) throw new TypeError('createClient: `token` or `getToken` is required')
    this.url = options.url.replace(/\/+$/, '').replace(/^ws(s?):\/\//, 'http$1://')
    this.clock = options.clock ?? systemClock
    const globals = globalThis as { WebSocket?: WebSocketConstructor, fetch?: FetchLike }
    const fetchFn = options.fetch ?? (typeof globals.fetch === 'function' ? globals.fetch.bind(globalThis) : undefined)
    if (fetchFn === undefined) throw new TypeError('createClient: no fetch available; pass `fetch`')
    this.fetchFn = fetchFn
    this.WebSocketCtor = options.WebSocket ?? globals.WebSocket
    const wanted = options.transports ?? DEFAULT_TRANSPORTS
    for (const name of wanted) if (!DEFAULT_TRANSPORTS.includes(name)) throw new TypeError(`createClient: unknown transport ${String(name)}`)
    // Without a WebSocket class (Node 20 without the `ws` option) the list starts at SSE.
    this.transportList = [...new Set(wanted)].filter((name) => name !== 'websocket' || this.WebSocketCtor !== undefined)
    if (this.transportList.length === 0) throw new TypeError('createClient: no usable transport (websocket needs a WebSocket class)')
    this.settings = {
      connectTimeout: options.connectTimeout ?? 10_000,
      heartbeat: options.heartbeat ?? {},
      pollTimeout: options.pollTimeout ?? 25,
      sendRate: options.sendRate ?? { rate: 40, burst: 80 }
    }
    this.backoff = new Backoff(options.backoff, () => this.clock.random())
    this.retryBackoff = new Backoff(options.backoff, () => this.clock.random())
    this.queue = new OfflineQueue(options.offlineQueue)
    this.currentToken = options.token
    this.getToken = options.getToken
    this.refreshBefore = options.refreshBefore ?? 30_000
    this.refreshEnabled = options.refresh ?? true
    this.upgradeInterval = options.upgradeInterval ?? 60_000
    this.idPrefix = randomId(6)
    this.life = new Reconnector({
      clock: this.clock,
      backoff: this.backoff,
      stableAfter: options.stableAfter ?? 5000,
      connect: () => { void this.attempt() },
      onChange: (change) => this.emit('state', change),
      onRetry: (info) => this.emit('reconnect', info)
    })
    // In a microtask, so that listeners attached right after createClient() see the first transition.
    if (options.autoConnect !== false) queueMicrotask(() => this.connect())
  }

  /** disconnected, connecting, connected, reconnecting or closed. */
  get state (): ConnectionState { return this.life.state }

  /** The transport in use or being tried (null before the first attempt and after close). */
  get transport (): TransportName | null { return this.active?.name ?? (this.state === 'closed' ? null : this.lastTransport) }

  /** Publishes waiting to be sent or acknowledged. */
  get pendingPublishes (): number { return this.queue.size + this.inflight.size + (this.restItem !== undefined ? 1 : 0) }

  /** Starts connecting (only needed with `autoConnect: false`). */
  connect (): void {
    if (this.state === 'disconnected') this.life.start('connect')
  }

  /** Closes for good: no reconnect; waiting publishes are rejected with HERALD_CLIENT_CLOSED. */
  close (): void {
    this.shutdown('client', new HeraldError(ClientErrorCodes.CLOSED, 'the client was closed'))
  }

  /**
   * Subscribes to `channel` (the same Subscription is returned for a channel already subscribed). With `since`,
   * events after that position are replayed first (or `recovery-failed` tells they cannot be).
   */
  subscribe (channel: string, options: { since?: Position } = {}): Subscription {
    if (this.state === 'closed') throw new HeraldError(ClientErrorCodes.CLOSED, 'the client is closed')
    if (!isValidChannel(channel)) throw new HeraldError('HERALD_ERR_BAD_CHANNEL', `Invalid channel name: ${JSON.stringify(channel)}`, { status: 400, channel })
    const existing = this.subs.get(channel)
    if (existing !== undefined) return existing
    const sub = new Subscription(channel, this, options.since)
    this.subs.set(channel, sub)
    const t = this.active
    if (t !== undefined) {
      if (t.name === 'websocket') { if (this.activeOpen) this.sendSubscribe(sub) } else t.subscriptionsChanged({ added: channel })
    }
    return sub
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
    return await new Promise<PublishAck>((resolve, reject) => {
      const item: PendingPublish = {
        id: options.id ?? `${this.idPrefix}-${randomId(10)}`,
        channel,
        data: data === undefined ? null : data,
        event: options.event,
        attempts: 0,
        settled: false,
        resolve: (ack) => { if (!item.settled) { item.settled = true; resolve(ack) } },
        reject: (err) => { if (!item.settled) { item.settled = true; reject(err) } }
      }
      const rejected = this.queue.push(item)
      rejected?.reject(new HeraldError(ClientErrorCodes.QUEUE_OVERFLOW, `offline queue full (${this.queue.max}, ${this.queue.overflow})`, { channel: rejected.channel }))
      this.flush()
    })
  }

  /** Who is subscribed to `channel` (the namespace must enable presence). */
  async presence (channel: string): Promise<PresenceInfo> {
    if (this.state === 'closed') throw new HeraldError(ClientErrorCodes.CLOSED, 'the client is closed')
    if (this.active?.name === 'websocket' && this.activeOpen) {
      const frame = await this.request<PresenceFrame>({ type: 'presence', channel })
      return { channel: frame.channel, members: frame.members, count: frame.count }
    }
    return await this.rest<PresenceInfo>(`/v1/channels/${encodeURIComponent(channel)}/presence`)
  }

  /** Events of `channel` after offset `since` (REST), oldest first; `limit: 0` gives just the newest offset and epoch. */
  async history (channel: string, options: { since?: number, limit?: number } = {}): Promise<HistoryPage> {
    const qs = new URLSearchParams({ since: String(options.since ?? 0) })
    if (options.limit !== undefined) qs.set('limit', String(options.limit))
    const page = await this.rest<Omit<HistoryPage, 'events'> & { events: Array<HeraldEvent & { type?: string }> }>(`/v1/channels/${encodeURIComponent(channel)}/events?${qs.toString()}`)
    return { ...page, events: page.events.map(({ type: _type, ...event }) => event) }
  }

  // ------------------------------------------------------------------ subscriptions (SubscriptionOwner)

  /** @internal Called by Subscription.unsubscribe() and on a refused subscription. */
  removeSubscription (sub: Subscription): void {
    if (this.subs.get(sub.channel) !== sub) return
    this.subs.delete(sub.channel)
    const sent = this.wsSubscribed.delete(sub.channel)
    const t = this.active
    if (t === undefined) return
    if (t.name === 'websocket') {
      if (this.activeOpen && sent && sub.state !== 'failed') t.send!({ type: 'unsubscribe', channel: sub.channel })
    } else {
      t.subscriptionsChanged({ removed: sub.channel })
    }
  }

  private channelList (): Array<{ channel: string, since?: Position }> {
    const out: Array<{ channel: string, since?: Position }> = []
    for (const sub of this.subs.values()) if (sub.active) out.push(sub.position === undefined ? { channel: sub.channel } : { channel: sub.channel, since: sub.position })
    return out
  }

  private sendSubscribe (sub: Subscription): void {
    const t = this.active
    if (t?.name !== 'websocket' || !this.activeOpen || this.wsSubscribed.has(sub.channel) || !sub.active) return
    this.wsSubscribed.add(sub.channel)
    const id = this.nextId('s')
    this.subscribeIds.set(id, sub.channel)
    t.send!({ type: 'subscribe', channel: sub.channel, since: sub.position, id })
  }

  // ------------------------------------------------------------------ connection attempts

  private async attempt (): Promise<void> {
    const gen = ++this.attemptGen
    if (this.active !== undefined) { this.active.close(); this.active = undefined; this.activeOpen = false }
    try {
      await this.ensureToken()
    } catch (err) {
      if (gen !== this.attemptGen || this.state === 'closed') return
      const error = err instanceof HeraldError ? err : new HeraldError(ClientErrorCodes.TOKEN, 'getToken failed: ' + describe(err))
      this.emit('error', error)
      this.life.lost(error.message, 'backoff')
      return
    }
    if (gen !== this.attemptGen || this.state === 'closed') return
    const transport = this.createTransport(this.transportList[this.level])
    this.active = transport
    this.lastTransport = transport.name
    transport.open()
  }

  private createTransport (name: TransportName): Transport {
    // `t` is assigned below, before any callback can run (they are all asynchronous).
    // eslint-disable-next-line prefer-const
    let t: Transport
    const host: TransportHost = {
      base: this.url,
      clock: this.clock,
      fetch: this.fetchFn,
      settings: this.settings,
      token: () => this.currentToken ?? '',
      channels: () => this.channelList(),
      opened: (info) => this.onOpened(t, info),
      frame: (frame) => { if (t === this.active) this.onFrame(frame) },
      pollAnswer: (answer, channels) => { if (t === this.active) this.onPollAnswer(answer, channels) },
      closed: (info) => this.onClosed(t, info),
      channelRefused: (info) => t === this.active && this.onChannelRefused(info),
      probe: async () => await this.probe()
    }
    t = name === 'websocket' ? new WebSocketTransport(host, this.WebSocketCtor!) : name === 'sse' ? new SseTransport(host) : new LongPollTransport(host)
    return t
  }

  private onOpened (t: Transport, info: OpenInfo): void {
    if (t === this.trial) { this.promote(t, info); return }
    if (t !== this.active || this.state === 'closed') return
    this.activeOpen = true
    this.authFailures = 0
    this.life.connected(`open (${t.name})`)
    this.announce(t, info)
  }

  /** Common to a fresh connection and a promoted (upgraded) one. */
  private announce (t: Transport, info: OpenInfo): void {
    // A 'state' listener may have closed the client already.
    if (t !== this.active) return
    if (this.lastTransportAnnounced !== t.name) {
      const from = this.lastTransportAnnounced
      this.lastTransportAnnounced = t.name
      this.emit('transport', { from, to: t.name })
    }
    this.emit('connected', { transport: t.name, ...(info.client !== undefined ? { client: info.client } : {}), ...(info.sub !== undefined ? { sub: info.sub } : {}) })
    if (t !== this.active) return
    if (t.name === 'websocket') for (const sub of this.subs.values()) this.sendSubscribe(sub)
    this.scheduleRefresh()
    this.scheduleUpgrade()
    this.flush()
  }

  private onClosed (t: Transport, info: CloseInfo): void {
    if (t === this.trial) { this.trial = undefined; this.upgradeFailed(); return }
    if (t !== this.active || this.state === 'closed') return
    this.active = undefined
    this.activeOpen = false
    this.connectionLost()
    void this.decide(t.name, info)
  }

  /** Everything tied to one connection is undone; publishes whose ack was lost go back to the queue. */
  private connectionLost (): void {
    this.clock.clearTimeout(this.upgradeTimer)
    this.upgradeTimer = undefined
    if (this.trial !== undefined) { this.trial.close(); this.trial = undefined }
    this.queue.requeue([...this.inflight.values()])
    this.inflight.clear()
    const lost = new HeraldError(ClientErrorCodes.DISCONNECTED, 'the connection was lost before the answer')
    for (const req of this.requests.values()) req.reject(lost)
    this.requests.clear()
    this.subscribeIds.clear()
    this.wsSubscribed.clear()
    for (const sub of this.subs.values()) sub.handleDisconnect()
  }

  /** Decides what a failed attempt or a lost connection means: retry (when, how), fall back, or stop. */
  private async decide (name: TransportName, info: CloseInfo): Promise<void> {
    const reason = `${name}: ${info.reason}`
    // Refused token.
    if (info.status === 401 || info.code === CloseCodes.TOKEN_EXPIRED) { this.authRefused(reason, info); return }
    // The server closed an open connection with a code: its range says what to do.
    if (info.code !== undefined && info.opened) {
      const action = closeAction(info.code)
      if (action === 'terminal') { this.terminate(reason, new HeraldError(closeCodeName(info.code), reason)); return }
      this.lost(reason, action === 'reconnect-now' ? 'jitter' : 'backoff')
      return
    }
    // An HTTP refusal of an SSE stream or a poll.
    if (info.status !== undefined) {
      if (info.status === 403 && info.errorCode === 'HERALD_ERR_ORIGIN_NOT_ALLOWED') { this.fallback(name, reason); return }
      if (info.status === 403) { this.terminate(reason, new HeraldError(info.errorCode ?? 'HERALD_ERR_FORBIDDEN', info.message ?? reason, { status: 403 })); return }
      this.lost(reason, 'backoff')
      return
    }
    // Lost after it worked (network drop, heartbeat timeout): back off, resume on the same transport.
    if (info.opened) { this.lost(reason, 'backoff'); return }
    // Never opened and no HTTP status (a browser shows a refused WebSocket only as a failed one): ask the server
    // over plain HTTP whether it is there and takes the token.
    const gen = this.attemptGen
    const probe = await this.probe()
    if (gen !== this.attemptGen || this.state === 'closed' || this.active !== undefined) return
    if (probe.network) { this.lost(`${reason}; server unreachable (${probe.message})`, 'backoff'); return }
    if (probe.status === 401) { this.authRefused(`${reason}; HTTP 401 ${probe.errorCode ?? ''}`.trim(), { ...info, status: 401, errorCode: probe.errorCode, message: probe.message }); return }
    if (probe.status === 429 || probe.status >= 500) { this.lost(`${reason}; HTTP ${probe.status}`, 'backoff'); return }
    // The server answers and accepts the token, yet this transport does not get through (a proxy without
    // WebSocket support, a buffering proxy, a blocked path …): try the next one.
    this.fallback(name, reason)
  }

  private lost (reason: string, mode: RetryMode): void {
    this.life.lost(reason, mode)
  }

  private fallback (name: TransportName, reason: string): void {
    if (this.level + 1 < this.transportList.length) {
      this.level++
      // Same state (connecting / reconnecting): the next transport is tried at once.
      void this.attempt()
      return
    }
    this.level = 0
    this.lost(`${reason}; no transport got through`, 'backoff')
  }

  private authRefused (reason: string, info: CloseInfo): void {
    const expired = info.code === CloseCodes.TOKEN_EXPIRED || info.errorCode === 'HERALD_ERR_TOKEN_EXPIRED'
    const code = expired ? 'HERALD_ERR_TOKEN_EXPIRED' : (info.errorCode ?? 'HERALD_ERR_UNAUTHORIZED')
    const error = new HeraldError(code, info.message ?? reason, { status: 401 })
    // A bad token (not an expired one) is not retried; nor is an expired one without getToken.
    if (!expired || this.getToken === undefined) { this.terminate(reason, error); return }
    this.authFailures++
    if (this.authFailures > MAX_AUTH_RETRIES) { this.terminate(`${reason}; fresh tokens were refused too`, error); return }
    this.currentToken = undefined
    this.lost('token expired', this.authFailures === 1 ? 'now' : 'backoff')
  }

  /** A stream was refused because of one of its channels: that subscription fails, the stream goes on without it. */
  private onChannelRefused (info: CloseInfo): boolean {
    if (info.status === undefined || ![400, 403, 404, 409].includes(info.status) || info.errorCode === 'HERALD_ERR_ORIGIN_NOT_ALLOWED') return false
    const named = /channel (?:name: )?"?([A-Za-z0-9_.:@-]{1,128})/.exec(info.message ?? '')?.[1]
    const sub = named === undefined ? undefined : this.subs.get(named)
    if (sub === undefined) return false
    sub.handleFailure(new HeraldError(info.errorCode ?? 'HERALD_ERR_FORBIDDEN', info.message ?? info.reason, { status: info.status, channel: sub.channel }))
    return true
  }

  private terminate (reason: string, error: HeraldError): void {
    if (this.state === 'closed') return
    this.shutdown(reason, error)
    this.emit('error', error)
  }

  private shutdown (reason: string, error: HeraldError): void {
    if (!this.life.close(reason)) return
    this.attemptGen++
    this.clock.clearTimeout(this.refreshTimer)
    this.clock.clearTimeout(this.upgradeTimer)
    this.refreshTimer = this.upgradeTimer = undefined
    for (const timer of this.timers) this.clock.clearTimeout(timer)
    this.timers.clear()
    for (const wake of [...this.waits]) wake()
    this.trial?.close()
    this.trial = undefined
    this.active?.close()
    this.active = undefined
    this.activeOpen = false
    const pending = [...this.inflight.values(), ...this.queue.drain()]
    if (this.restItem !== undefined) pending.push(this.restItem)
    this.inflight.clear()
    for (const item of pending) item.reject(error)
    for (const req of this.requests.values()) req.reject(error)
    this.requests.clear()
    for (const sub of [...this.subs.values()]) sub.handleClose()
    this.subs.clear()
  }

  /** Is the server there, and does it take the token? `GET /v1/whoami`: 200, or 401 for a refused token. */
  private async probe (): Promise<ProbeResult> {
    const controller = new AbortController()
    const timer = this.clock.setTimeout(() => controller.abort(), this.settings.connectTimeout)
    try {
      const res = await this.fetchFn(`${this.url}/v1/whoami`, { headers: { authorization: 'Bearer ' + (this.currentToken ?? '') }, signal: controller.signal })
      return { network: false, status: res.status, ...(await errorOf(res)) }
    } catch (err) {
      return { network: true, message: describe(err) }
    } finally {
      this.clock.clearTimeout(timer)
    }
  }

  // ------------------------------------------------------------------ frames

  private onFrame (frame: ServerFrame): void {
    switch (frame.type) {
      case 'subscribed': this.subs.get(frame.channel)?.handleSubscribed(frame); break
      case 'event': this.subs.get(frame.channel)?.handleEvent(frame); break
      case 'unsubscribed': this.onUnsubscribed(frame); break
      case 'ack': this.onAck(frame); break
      case 'error': this.onErrorFrame(frame); break
      case 'presence': {
        const req = frame.id === undefined ? undefined : this.requests.get(frame.id)
        if (req !== undefined) { this.requests.delete(frame.id!); req.resolve(frame) }
        break
      }
      case 'presence_diff': this.subs.get(frame.channel)?.handlePresence(frame.joins, frame.leaves); break
      case 'presence_count': this.subs.get(frame.channel)?.handleCount(frame.members, frame.connections); break
      default: break
    }
  }

  private onUnsubscribed (frame: UnsubscribedFrame): void {
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

  private onAck (frame: AckFrame): void {
    const item = this.inflight.get(frame.id)
    if (item !== undefined) {
      this.inflight.delete(frame.id)
      this.retryBackoff.reset()
      item.resolve({ channel: frame.channel ?? item.channel, offset: frame.offset ?? 0, epoch: frame.epoch ?? '', duplicate: frame.duplicate === true })
      return
    }
    const req = this.requests.get(frame.id)
    if (req !== undefined) { this.requests.delete(frame.id); req.resolve(frame) }
    this.subscribeIds.delete(frame.id)
  }

  private onErrorFrame (frame: ErrorFrame): void {
    const error = new HeraldError(frame.code, frame.message, { channel: frame.channel })
    if (frame.id !== undefined) {
      const item = this.inflight.get(frame.id)
      if (item !== undefined) {
        this.inflight.delete(frame.id)
        if (TRANSIENT.has(frame.code) && ++item.attempts < MAX_PUBLISH_ATTEMPTS) this.retryLater(item)
        else item.reject(error)
        return
      }
      const req = this.requests.get(frame.id)
      if (req !== undefined) { this.requests.delete(frame.id); req.reject(error); return }
      const channel = this.subscribeIds.get(frame.id)
      if (channel !== undefined) { this.subscribeIds.delete(frame.id); this.onSubscribeError(channel, error); return }
    } else if (frame.channel !== undefined && this.subs.has(frame.channel)) {
      // SSE: a subscribe of the stream failed.
      this.onSubscribeError(frame.channel, error)
      return
    }
    this.emit('error', error)
  }

  private onSubscribeError (channel: string, error: HeraldError): void {
    const sub = this.subs.get(channel)
    if (sub === undefined || error.code === 'HERALD_ERR_ALREADY_SUBSCRIBED') return
    this.wsSubscribed.delete(channel)
    if (TRANSIENT.has(error.code)) {
      // The bus is down or busy: try again later (SSE: the stream ends and the reconnect retries).
      sub.handleDisconnect()
      const t = this.active
      if (t?.name === 'websocket') this.later(() => { if (this.active === t && this.subs.get(channel) === sub) this.sendSubscribe(sub) }, this.retryBackoff.next())
      return
    }
    sub.handleFailure(error)
  }

  private onPollAnswer (answer: PollAnswer, channels: string[]): void {
    const recovered = new Set<string>()
    for (const r of answer.recovery ?? []) {
      const sub = this.subs.get(r.channel)
      if (sub === undefined) continue
      sub.handleSubscribed({ offset: r.offset, epoch: r.epoch, recovered: false, reason: r.reason, replayed: 0 })
      recovered.add(r.channel)
    }
    const cursor = decodeCursor(answer.cursor)
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

  // ------------------------------------------------------------------ publishing

  /** Sends what waits in the queue, if a connection is open. */
  private flush (): void {
    const t = this.active
    if (t === undefined || !this.activeOpen || this.state !== 'connected') return
    if (t.name === 'websocket') {
      for (let item = this.queue.shift(); item !== undefined; item = this.queue.shift()) {
        if (item.settled) continue
        this.inflight.set(item.id, item)
        t.send!({ type: 'publish', channel: item.channel, data: item.data, event: item.event, id: item.id })
      }
    } else {
      void this.restPump()
    }
  }

  private retryLater (item: PendingPublish): void {
    this.queue.requeue([item])
    this.later(() => this.flush(), this.retryBackoff.next())
  }

  /** A timer that close() cancels. */
  private later (fn: () => void, ms: number): void {
    const timer = this.clock.setTimeout(() => { this.timers.delete(timer); fn() }, ms)
    this.timers.add(timer)
  }

  /** Waits `ms`, or less if the client closes meanwhile. */
  private async pause (ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const wake = (): void => { this.waits.delete(wake); this.clock.clearTimeout(timer); resolve() }
      const timer = this.clock.setTimeout(wake, ms)
      this.waits.add(wake)
    })
  }

  /** SSE and long-poll publish over REST, one at a time so that they are stored in order. */
  private async restPump (): Promise<void> {
    if (this.restBusy) return
    this.restBusy = true
    try {
      while (this.state === 'connected' && this.activeOpen && this.active !== undefined && this.active.name !== 'websocket') {
        const item = this.queue.shift()
        if (item === undefined) break
        if (item.settled) continue
        this.restItem = item
        const outcome = await this.restPublish(item)
        this.restItem = undefined
        if (item.settled) { this.retryBackoff.reset(); continue }
        if (this.isClosed()) { item.reject(new HeraldError(ClientErrorCodes.CLOSED, 'the client was closed')); break }
        this.queue.requeue([item])
        if (outcome === 'retry') await this.pause(this.retryBackoff.next())
      }
    } finally {
      this.restBusy = false
    }
    // Switched to WebSocket meanwhile: it sends what is left.
    if (this.active?.name === 'websocket') this.flush()
  }

  private async restPublish (item: PendingPublish): Promise<'done' | 'retry' | 'token'> {
    let res: Response
    try {
      await this.ensureToken()
      res = await this.fetchFn(`${this.url}/v1/channels/${encodeURIComponent(item.channel)}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer ' + (this.currentToken ?? '') },
        body: JSON.stringify({ data: item.data, event: item.event, id: item.id })
      })
    } catch {
      return 'retry'
    }
    if (res.status === 201 || res.status === 200) {
      try {
        const body = await res.json() as PublishAck
        item.resolve({ channel: body.channel, offset: body.offset, epoch: body.epoch, duplicate: body.duplicate === true })
        return 'done'
      } catch {
        return 'retry'
      }
    }
    const body = await errorOf(res)
    const error = new HeraldError(body.errorCode ?? `HTTP_${res.status}`, body.message ?? `HTTP ${res.status}`, { status: res.status, channel: item.channel })
    if (res.status === 401 && body.errorCode === 'HERALD_ERR_TOKEN_EXPIRED' && this.getToken !== undefined && ++item.attempts < MAX_PUBLISH_ATTEMPTS) {
      try { await this.renewToken(); return 'token' } catch { return 'retry' }
    }
    if ((res.status === 429 || res.status >= 500) && ++item.attempts < MAX_PUBLISH_ATTEMPTS) return 'retry'
    item.reject(error)
    return 'done'
  }

  // ------------------------------------------------------------------ requests, REST

  private async request<T>(frame: ClientFrame): Promise<T> {
    const t = this.active
    if (t?.name !== 'websocket' || !this.activeOpen) throw new HeraldError(ClientErrorCodes.DISCONNECTED, 'not connected over WebSocket')
    const id = this.nextId('r')
    return await new Promise<T>((resolve, reject) => {
      this.requests.set(id, { resolve, reject })
      t.send!({ ...frame, id })
    })
  }

  private async rest<T>(path: string): Promise<T> {
    await this.ensureToken()
    let res: Response
    try {
      res = await this.fetchFn(this.url + path, { headers: { authorization: 'Bearer ' + (this.currentToken ?? '') } })
    } catch (err) {
      throw new HeraldError(ClientErrorCodes.NETWORK, describe(err))
    }
    if (res.status === 401 && this.getToken !== undefined) {
      const body = await errorOf(res)
      if (body.errorCode === 'HERALD_ERR_TOKEN_EXPIRED') {
        await this.renewToken()
        res = await this.fetchFn(this.url + path, { headers: { authorization: 'Bearer ' + (this.currentToken ?? '') } })
      } else {
        throw new HeraldError(body.errorCode ?? 'HERALD_ERR_UNAUTHORIZED', body.message ?? 'HTTP 401', { status: 401 })
      }
    }
    if (!res.ok) {
      const body = await errorOf(res)
      throw new HeraldError(body.errorCode ?? `HTTP_${res.status}`, body.message ?? `HTTP ${res.status}`, { status: res.status })
    }
    return await res.json() as T
  }

  // ------------------------------------------------------------------ tokens

  /** Makes sure there is a token that is not about to expire (fetching one with getToken when needed). */
  private async ensureToken (): Promise<void> {
    if (this.currentToken !== undefined) {
      const exp = tokenExpiry(this.currentToken)
      if (this.getToken === undefined || exp === undefined || exp - this.clock.now() > 1000) return
    }
    await this.renewToken()
  }

  /** Calls getToken (once for concurrent callers). */
  private async renewToken (): Promise<string> {
    const getToken = this.getToken
    if (getToken === undefined) {
      if (this.currentToken !== undefined) return this.currentToken
      throw new HeraldError(ClientErrorCodes.TOKEN, 'no token')
    }
    this.tokenPromise ??= (async () => {
      try {
        let token: unknown
        try {
          token = await getToken()
        } catch (err) {
          throw new HeraldError(ClientErrorCodes.TOKEN, 'getToken failed: ' + describe(err))
        }
        if (typeof token !== 'string' || token === '') throw new HeraldError(ClientErrorCodes.TOKEN, 'getToken returned no token')
        this.currentToken = token
        return token
      } finally {
        this.tokenPromise = undefined
      }
    })()
    return await this.tokenPromise
  }

  /** Schedules a renewal `refreshBefore` ms before the token's exp (at most half of its remaining life). */
  private scheduleRefresh (): void {
    this.clock.clearTimeout(this.refreshTimer)
    this.refreshTimer = undefined
    if (this.getToken === undefined || !this.refreshEnabled || this.currentToken === undefined || this.state === 'closed') return
    const exp = tokenExpiry(this.currentToken)
    if (exp === undefined) return
    const left = exp - this.clock.now()
    const delay = Math.max(0, left - Math.min(this.refreshBefore, left / 2))
    this.refreshTimer = this.clock.setTimeout(() => { void this.refreshNow() }, Math.min(delay, MAX_TIMER))
  }

  /**
   * Gets a new token and hands it to the open connection without dropping it: a `refresh` frame on WebSocket, a
   * reopen from the current cursor on SSE, the next request on long-poll.
   */
  private async refreshNow (): Promise<void> {
    this.refreshTimer = undefined
    let token: string
    try {
      token = await this.renewToken()
    } catch (err) {
      if (this.state === 'closed') return
      this.emit('error', err instanceof HeraldError ? err : new HeraldError(ClientErrorCodes.TOKEN, describe(err)))
      // Try again a little later, while the old token still lives.
      this.refreshTimer = this.clock.setTimeout(() => { void this.refreshNow() }, 1000 + Math.floor(this.clock.random() * 1000))
      return
    }
    if (this.state === 'closed') return
    const t = this.active
    if (t !== undefined && this.activeOpen) {
      if (t.name === 'websocket') {
        try {
          await this.request({ type: 'refresh', token })
        } catch (err) {
          // Refused (or the connection dropped): the next connection uses the new token anyway.
          if (err instanceof HeraldError && err.code !== ClientErrorCodes.DISCONNECTED) this.emit('error', err)
        }
      } else {
        t.tokenChanged()
      }
    }
    if (!this.isClosed()) this.scheduleRefresh()
  }

  // ------------------------------------------------------------------ upgrading back to the preferred transport

  private scheduleUpgrade (): void {
    this.clock.clearTimeout(this.upgradeTimer)
    this.upgradeTimer = undefined
    if (this.upgradeInterval <= 0 || this.level === 0 || this.trial !== undefined) return
    this.upgradeTimer = this.clock.setTimeout(() => { this.upgradeTimer = undefined; this.tryUpgrade(0) }, this.upgradeInterval)
  }

  private tryUpgrade (from: number): void {
    if (!this.activeOpen || this.trial !== undefined || this.state !== 'connected') return
    for (let i = from; i < this.level; i++) {
      const name = this.transportList[i]
      // An SSE stream without channels proves nothing: only try it with subscriptions to stream.
      if (name === 'sse' && this.channelList().length === 0) continue
      this.trialLevel = i
      this.trial = this.createTransport(name)
      this.trial.open()
      return
    }
    this.scheduleUpgrade()
  }

  private upgradeFailed (): void {
    if (this.trialLevel + 1 < this.level) this.tryUpgrade(this.trialLevel + 1)
    else this.scheduleUpgrade()
  }

  /** The trial connection opened: it replaces the current one, which is closed; subscriptions resume from their positions. */
  private promote (t: Transport, info: OpenInfo): void {
    if (this.state !== 'connected') { t.close(); this.trial = undefined; return }
    const old = this.active
    this.trial = undefined
    old?.close()
    this.active = t
    this.activeOpen = true
    this.level = this.trialLevel
    this.lastTransport = t.name
    this.subscribeIds.clear()
    this.wsSubscribed.clear()
    for (const sub of this.subs.values()) sub.handleDisconnect()
    this.announce(t, info)
  }

  /** (A method, so that TypeScript does not narrow the state across awaits.) */
  private isClosed (): boolean { return this.life.state === 'closed' }

  private nextId (kind: string): string { return `${kind}${++this.seq}` }
}

/** Creates a client. See ClientOptions and docs/client.md. */
export function createClient (options: ClientOptions): HeraldClient {
  return new HeraldClient(options)
}

function closeCodeName (code: number): string {
  if (code === CloseCodes.UNAUTHORIZED) return 'HERALD_ERR_UNAUTHORIZED'
  if (code === CloseCodes.FORBIDDEN) return 'HERALD_ERR_FORBIDDEN'
  if (code === CloseCodes.TOKEN_EXPIRED) return 'HERALD_ERR_TOKEN_EXPIRED'
  return `HERALD_CLOSE_${code}`
}

/** Random hex from crypto.getRandomValues (available in insecure browser contexts too), else Math.random. */
function randomId (bytes: number): string {
  const buf = new Uint8Array(bytes)
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto
  if (typeof crypto?.getRandomValues === 'function') crypto.getRandomValues(buf)
  else for (let i = 0; i < bytes; i++) buf[i] = Math.floor(Math.random() * 256)
  let out = ''
  for (const b of buf) out += b.toString(16).padStart(2, '0')
  return out
}

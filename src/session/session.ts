import type { Logger } from 'pino'
import type { Publication } from '../bus/broker.js'
import type { Hub } from '../hub/hub.js'
import type { RecoveryFailure, Sink, SubscribeResult } from '../hub/sink.js'
import type { Metrics } from '../metrics.js'
import type { NamespaceOptions, Namespaces } from '../namespaces.js'
import type { PresenceMember } from '../presence/presence.js'
import type { Transport } from '../transports/transport.js'
import type { Connection, SessionRegistry } from './registry.js'
import type { TransportName } from '../protocol/transports.js'
import { type Principal, can, subscribeRule } from '../auth/permissions.js'
import { StreamCursor, type StreamPosition } from '../protocol/cursor.js'
import { CloseCodes } from '../protocol/codes.js'
import { frame } from '../protocol/frames.js'
import { Errors, asHeraldError, isHeraldError } from '../errors.js'
import { Outbox, type OutboxTarget } from './outbox.js'
import { deltaOf } from '../hub/delta.js'
import type { Subscription } from '../hub/replay.js'
import type { ProxyHooks } from '../proxy/hooks.js'

/** What every session needs, built once per Herald instance (session/sessions.ts). */
export interface SessionServices {
  hub: Hub
  registry: SessionRegistry
  namespaces: Namespaces
  metrics: Metrics
  log: Logger
  maxBufferBytes: number
  maxSubscriptions: number
  /** The application's hooks (docs/proxy.md): subscribe (namespaces with subscribeProxy) and refresh. */
  proxy?: ProxyHooks
}

export interface SessionOptions {
  /** false: never a presence member. */
  presence?: boolean
  /** Log opening and closing at debug level only. */
  quiet?: boolean
  /** false: not a connection of the registry (a long-poll session: its waiting polls are the connections). */
  connection?: boolean
}

/**
 * A subscription, as the session keeps it: also the hub's own record of it (hub/replay.ts's Subscription: offset,
 * buffer, member), so a delivery arrives with its state and needs no lookup. `server`: made by the server (the
 * principal's `channels`, or the server API: control/actions.ts), not asked for by the client; no token pattern
 * needed. `data`: what the subscribe hook gave this subscriber, sent with `subscribed`.
 */
interface SubState extends Subscription {
  /** Still this session's subscription: false once it is removed (unsubscribed, failed, lost, dropped, closed). */
  current: boolean
  active: boolean
  ns: NamespaceOptions | undefined
  server: boolean
  data?: unknown
  /** Delta delivery is on (asked for, and the namespace allows it); `last`: the publication the client holds last. */
  delta: boolean
  last?: Publication
}

/** How long before a hook-admitted connection's `exp` the refresh hook is asked; and the least time left to ask. */
const REFRESH_LEAD_MS = 30_000
const MIN_REFRESH_MS = 500

/**
 * The token expiries of every session of this process, by the second they fall in, watched by one timer set for the
 * earliest: not a Timeout, a closure and its context per connection (~300 bytes each). A session is closed when its
 * second has come, as a timer of its own would (an expiry too far off for one timer is reached in steps).
 */
class ExpiryWheel {
  private readonly buckets = new Map<number, Set<Session>>()
  private timer?: NodeJS.Timeout
  /** The second the timer is set for (Infinity: none). */
  private timerAt = Number.POSITIVE_INFINITY

  add (session: Session, exp: number): void {
    let set = this.buckets.get(exp)
    if (set === undefined) this.buckets.set(exp, set = new Set())
    set.add(session)
    if (exp < this.timerAt) this.arm(exp)
  }

  delete (session: Session, exp: number): void {
    const set = this.buckets.get(exp)
    if (set === undefined || !set.delete(session)) return
    if (set.size > 0) return
    this.buckets.delete(exp)
    if (this.buckets.size === 0) { clearTimeout(this.timer); this.timer = undefined; this.timerAt = Number.POSITIVE_INFINITY }
  }

  private arm (exp: number): void {
    clearTimeout(this.timer)
    this.timerAt = exp
    this.timer = setTimeout(() => this.fire(), expiryTimer(exp, Date.now()).ms).unref()
  }

  /** Closes the sessions whose second has come, then waits for the earliest one left. */
  private fire (): void {
    this.timer = undefined
    this.timerAt = Number.POSITIVE_INFINITY
    const now = Date.now()
    let next = Number.POSITIVE_INFINITY
    for (const [exp, set] of this.buckets) {
      if (exp * 1000 <= now) {
        this.buckets.delete(exp)
        for (const session of set) session.expire()
      } else if (exp < next) {
        next = exp
      }
    }
    if (next !== Number.POSITIVE_INFINITY) this.arm(next)
  }
}
const expiries = new ExpiryWheel()

/** setTimeout's longest delay (about 24.8 days); a later expiry is reached in steps. */
export const MAX_TIMER_MS = 0x7fffffff

/**
 * The timer that watches a token expiring at `exp` (seconds): fire in `ms`, then either the token has expired, or
 * (an expiry further away than one timer can wait) look again. Any `exp` expires on time.
 */
export function expiryTimer (exp: number, now: number): { ms: number, expired: boolean } {
  const ms = exp * 1000 - now
  return ms > MAX_TIMER_MS ? { ms: MAX_TIMER_MS, expired: false } : { ms: Math.max(0, ms), expired: true }
}

/**
 * One client connection, whatever its transport: who it is (the principal, until its token expires), what it is
 * subscribed to and where each stream stands, the frames on their way out (all through one bounded outbox: events,
 * acks, errors, pongs, presence), its presence membership and why it ended. The hub delivers to it as a Sink; the
 * transport (transports/transport.ts) only moves its bytes. Client commands, for transports that carry them, are
 * handled by session/commands.ts on top of this.
 */
export class Session implements Sink, Connection, OutboxTarget {
  readonly id: string
  readonly openedAt = Date.now()
  private readonly subs = new Map<string, SubState>()
  /*
   * Made on first use: an idle WebSocket never needs a stream cursor, and most sessions are between subscribe
   * attempts (each Map is about 250 bytes; these three were a fifth of an idle connection's heap).
   */
  private streamCursor?: StreamCursor
  /** Per channel, the subscribe attempt under way (serialised), and the state the hub is setting up now. */
  private attempts?: Map<string, Promise<SubscribeResult>>
  private running?: Map<string, SubState>
  private readonly outbox: Outbox
  private expiry?: NodeJS.Timeout
  /** The `exp` (seconds) this session waits in the expiry wheel for, if it does. */
  private waitsFor?: number
  private presenceMember?: PresenceMember
  private ended = false
  /** Replays waiting for their turn (replayTurn), and whether one holds it. */
  private turns?: Array<(release: () => void) => void>
  private turnTaken = false
  private readonly present: boolean
  private readonly logLevel: 'info' | 'debug'

  /** See SessionOptions: long-poll sessions, shared by whoever polls from their cursor, turn all three off. */
  constructor (private readonly services: SessionServices, readonly transport: Transport, public principal: Principal, options: SessionOptions = {}) {
    this.present = options.presence ?? true
    this.logLevel = options.quiet === true ? 'debug' : 'info'
    this.id = services.registry.newId()
    this.outbox = new Outbox(this, services.maxBufferBytes)
    this.scheduleExpiry()
    if (options.connection !== false) services.registry.add(this)
    services.registry.track(this)
  }

  get transportName (): TransportName { return this.transport.name }
  get sub (): string { return this.principal.sub }
  get closed (): boolean { return this.ended }
  get subscriptionCount (): number { return this.subs.size }

  /** Who this connection is in presence, built on first use (most connections never need it). */
  get member (): PresenceMember | undefined {
    if (!this.present) return undefined
    this.presenceMember ??= { sub: this.principal.sub, client: this.id, connectedAt: this.openedAt, info: this.principal.info }
    return this.presenceMember
  }

  isSubscribed (channel: string): boolean { return this.subs.has(channel) }

  /** Whether the server API made this subscription (the client did not ask for it). */
  isServerSubscription (channel: string): boolean { return this.subs.get(channel)?.server === true }

  // ---- subscriptions ----

  /**
   * Subscribes one channel: permission, namespace and the subscription cap are checked at once (throwing the
   * HERALD_ERR_* to answer with), then the hub replays from `since` (if given) and goes live. A subscription the
   * server API makes (`server`) needs no pattern in the token (the backend decided), but the namespace and the cap hold.
   */
  subscribe (channel: string, since?: StreamPosition, server = false, delta = false): Promise<SubscribeResult> {
    const ns = this.services.namespaces.require(channel)
    const rule = server ? 'allow' : subscribeRule(this.principal, channel, ns.subscribeProxy)
    if (rule === 'deny') throw new Errors.FORBIDDEN('subscribe', channel)
    if (this.subs.has(channel)) throw new Errors.ALREADY_SUBSCRIBED(channel)
    if (this.subs.size >= this.services.maxSubscriptions) throw new Errors.TOO_MANY_SUBSCRIPTIONS(this.services.maxSubscriptions)
    const state: SubState = { offset: 0, buffer: null, member: undefined, current: true, active: false, ns, server, data: undefined, delta: delta && ns.delta, last: undefined }
    this.subs.set(channel, state)
    // One attempt per channel at a time: a subscribe after an unsubscribe of one still being set up waits for it
    // (which then undoes itself), so the hub never holds two for this session, nor one the session forgot.
    const attempts = this.attempts ??= new Map()
    const before = attempts.get(channel)
    const attempt = (before === undefined ? Promise.resolve() : before.catch(() => {})).then(async () => {
      if (this.subs.get(channel) !== state) throw new Errors.NOT_SUBSCRIBED(channel)
      if (rule === 'ask') {
        const answer = await this.services.proxy!.call('subscribe', { sub: this.sub, channel, info: this.principal.info, transport: this.transport.name })
        if (this.subs.get(channel) !== state) throw new Errors.NOT_SUBSCRIBED(channel)
        if (answer.data !== undefined) state.data = answer.data
      }
      const running = this.running ??= new Map()
      running.set(channel, state)
      let result: SubscribeResult
      try {
        result = await this.services.hub.subscribe(this, channel, since, state)
      } finally {
        running.delete(channel)
        if (running.size === 0 && this.running === running) this.running = undefined
      }
      // Unsubscribed while it was being set up: it was undone (see subscribed); say so rather than ack it.
      if (this.subs.get(channel) !== state) throw new Errors.NOT_SUBSCRIBED(channel)
      return result
    })
    attempts.set(channel, attempt)
    return attempt.catch((err: unknown) => {
      if (this.subs.get(channel) === state) this.forget(channel, state)
      throw err
    }).finally(() => {
      if (attempts.get(channel) === attempt) attempts.delete(channel)
      if (attempts.size === 0 && this.attempts === attempts) this.attempts = undefined
    })
  }

  /** The server API subscribes this session (see subscribe); a transport shared by several clients becomes its own. */
  serverSubscribe (channel: string, since?: StreamPosition): Promise<SubscribeResult> {
    this.transport.personalise?.()
    return this.subscribe(channel, since, true)
  }

  /** Ends a subscription, telling the client why (`client`, `forbidden`, …); false when there was none. */
  unsubscribe (channel: string, reason: string): boolean {
    const state = this.subs.get(channel)
    if (state === undefined) return false
    this.forget(channel, state)
    this.services.hub.unsubscribe(this, channel)
    this.outbox.discard(channel)
    this.send(frame.unsubscribed(channel, reason))
    return true
  }

  /** A new token for the same subject: the connection lives to its expiry, and keeps only what it still allows. */
  reauthorize (principal: Principal): void {
    this.principal = principal
    this.scheduleExpiry()
    for (const [channel, state] of [...this.subs]) if (!state.server && !can(principal, 'subscribe', channel)) this.unsubscribe(channel, 'forbidden')
  }

  /** Sends a control frame (ack, error, pong, presence reply) through the outbox, after the events before it. */
  send (text: string): void {
    if (!this.ended) this.outbox.control(text)
  }

  /** Answers a failed request with an `error` frame; anything but a HERALD_ERR_* is logged as the bug it is. */
  fail (err: unknown, id?: string, channel?: string): void {
    const herr = asHeraldError(err)
    if (!isHeraldError(err)) this.services.log.error({ err, client: this.id }, 'request failed')
    this.services.metrics.errors.inc({ code: herr.code })
    this.send(frame.error(herr, id, channel))
  }

  // ---- Sink (the hub) ----

  subscribed (result: SubscribeResult): void {
    // Closed or unsubscribed (and perhaps subscribed anew) while the hub was still setting it up: undo it.
    const state = this.running?.get(result.channel)
    if (this.ended || state === undefined || this.subs.get(result.channel) !== state) { this.services.hub.unsubscribe(this, result.channel); return }
    state.active = true
    let body: Parameters<typeof frame.subscribed>[0] = result
    if (state.server) body = { ...body, server: true }
    if (state.data !== undefined) body = { ...body, data: state.data }
    if (state.delta) body = { ...body, delta: true }
    this.outbox.control(frame.subscribed(body), result)
  }

  deliver (pub: Publication, replay: boolean, sub: Subscription): void {
    const state = sub as SubState
    if (this.ended || !state.current) return
    // Backpressure: a client that does not read must not grow this process's memory without bound.
    if (!state.delta) { this.outbox.push(pub, state.ns, replay); return }
    // Delta delivery: a live event right after the one the client holds may go as a patch of it (hub/delta.ts);
    // replays always go whole. The namespace's backpressure is `disconnect`: nothing queued is ever dropped, so
    // what was handed to the outbox is what the client will hold.
    const last = state.last
    state.last = pub
    this.outbox.push((!replay && last !== undefined ? deltaOf(last, pub) : undefined) ?? pub, state.ns, replay)
  }

  notify (channel: string, text: string): void {
    if (!this.ended && this.subs.get(channel)?.active === true) this.outbox.control(text)
  }

  lost (channel: string, reason: RecoveryFailure): void {
    const state = this.subs.get(channel)
    if (this.ended || state === undefined) return
    this.forget(channel, state)
    this.outbox.discard(channel)
    this.send(frame.unsubscribed(channel, 'insufficient_state: ' + reason, true))
    // A one-way stream cannot resubscribe one channel: end it; the reconnect resumes from its cursor.
    if (!this.transport.bidirectional) this.close(CloseCodes.INSUFFICIENT_STATE, 'insufficient state')
  }

  /** One replay page at a time, each once the pages before it went out (hub/replay.ts). */
  replayTurn (): Promise<() => void> {
    return new Promise((resolve) => {
      (this.turns ??= []).push(resolve)
      this.grantTurn()
    })
  }

  private grantTurn (): void {
    if (this.turnTaken || this.turns === undefined || this.turns.length === 0) return
    this.turnTaken = true
    void this.outbox.whenDrained().then(() => {
      const next = this.turns!.shift()!
      next(() => { this.turnTaken = false; this.grantTurn() })
    })
  }

  // ---- OutboxTarget ----

  /** Where a one-way transport's stream stands per channel: SSE ids and long-poll cursors carry it. */
  get cursor (): StreamCursor { return this.streamCursor ??= new StreamCursor() }

  buffered (): number { return this.transport.buffered() }

  /** Bytes on their way to the client: waiting in the outbox and handed to the connection (herald_outbox_bytes). */
  outboxBytes (): number {
    const buffered = this.transport.buffered()
    return this.outbox.bytes + (Number.isFinite(buffered) ? buffered : 0)
  }

  writeEvent (pub: Publication): void {
    if (this.ended) return
    if (!this.transport.bidirectional) this.cursor.advance(pub.channel, pub.offset, pub.epoch)
    this.transport.event(pub)
  }

  writeFrame (text: string, result?: SubscribeResult): void {
    if (this.ended) return
    if (result === undefined) { this.transport.send(text); return }
    if (!this.transport.bidirectional) this.cursor.set(result.channel, result)
    this.transport.subscribed(text, result)
  }

  evict (): void {
    this.services.metrics.evictions.inc({ transport: this.transport.name, reason: 'disconnect' })
    this.close(CloseCodes.SLOW_CONSUMER, 'slow consumer: reconnect and resume from your last positions')
  }

  dropped (channel: string): void {
    this.services.metrics.evictions.inc({ transport: this.transport.name, reason: 'dropped' })
    if (!this.transport.bidirectional) { this.close(CloseCodes.SLOW_CONSUMER, 'slow consumer: events dropped; reconnect to resume'); return }
    const state = this.subs.get(channel)
    if (state === undefined) return
    this.forget(channel, state)
    this.services.metrics.events.record('eviction', `${this.transport.name} ${this.id} of ${this.sub}: channel ${channel} dropped (slow consumer)`)
    this.services.hub.unsubscribe(this, channel)
    this.send(frame.unsubscribed(channel, 'insufficient_state: slow_consumer', true))
  }

  /** Removes a subscription from this session; deliveries the hub still makes for it are ignored. */
  private forget (channel: string, state: SubState): void {
    state.current = false
    this.subs.delete(channel)
  }

  // ---- lifecycle ----

  /** Ends the connection from this side, with a close code the client acts on (protocol/codes.ts). */
  close (code: number, reason: string): void {
    if (this.ended) return
    this.services.log[this.logLevel]({ client: this.id, sub: this.sub, transport: this.transport.name, code, reason, ms: Date.now() - this.openedAt }, 'closing connection')
    const kind = code === CloseCodes.SLOW_CONSUMER ? 'eviction' : code === CloseCodes.TOKEN_EXPIRED ? 'token-expired' : 'closed'
    this.services.metrics.events.record(kind, `${this.transport.name} ${this.id} of ${this.sub}: ${reason}`, code)
    this.cleanup()
    this.transport.close(code, reason)
  }

  /** The peer went away (or the transport gave up on it): forget everything. */
  gone (reason: string): void {
    if (this.ended) return
    this.services.log[this.logLevel]({ client: this.id, sub: this.sub, transport: this.transport.name, reason, ms: Date.now() - this.openedAt }, 'connection closed')
    this.cleanup()
  }

  /**
   * At the token's expiry, unless a refresh came first, the connection is closed with 4501. A connection the
   * connect hook admitted is instead asked about again before then (the refresh hook), and goes on or ends.
   */
  private scheduleExpiry (): void {
    clearTimeout(this.expiry)
    if (this.waitsFor !== undefined) { expiries.delete(this, this.waitsFor); this.waitsFor = undefined }
    const exp = this.principal.exp
    if (exp === undefined) return
    if (this.principal.proxied === true && this.services.proxy?.has('refresh') === true && this.scheduleRefresh(exp)) return
    this.waitsFor = exp
    expiries.add(this, exp)
  }

  /** The expiry wheel: the token's `exp` has come. */
  expire (): void {
    this.waitsFor = undefined
    this.close(CloseCodes.TOKEN_EXPIRED, 'token expired: refresh it or reconnect with a new one')
  }

  /**
   * Asks the refresh hook REFRESH_LEAD before `exp` (or half-way there, for a short-lived admission): a new `exp`
   * extends the connection, a refusal closes it (4501), a hook that does not answer is asked again until `exp`
   * comes, which then closes the connection as any expiry does. False when `exp` is too close to ask first.
   */
  private scheduleRefresh (exp: number): boolean {
    const left = exp * 1000 - Date.now()
    if (left < 2 * MIN_REFRESH_MS) return false
    const at = Math.min(left - Math.min(REFRESH_LEAD_MS, left / 2), MAX_TIMER_MS)
    this.expiry = setTimeout(() => {
      const asked = this.principal
      this.services.proxy!.call('refresh', { sub: this.sub, transport: this.transport.name, info: this.principal.info }).then((answer) => {
        if (this.ended || this.principal !== asked) return
        if (answer.exp * 1000 <= Date.now()) { this.close(CloseCodes.TOKEN_EXPIRED, 'the application did not extend the connection'); return }
        this.principal = { ...asked, exp: Math.floor(answer.exp), ...(answer.info !== undefined ? { info: answer.info } : {}) }
        this.scheduleExpiry()
      }, (err: unknown) => {
        if (this.ended || this.principal !== asked) return
        if (asHeraldError(err).code === 'HERALD_ERR_PROXY_REFUSED') { this.close(CloseCodes.TOKEN_EXPIRED, 'the application ended the connection (refresh refused)'); return }
        this.scheduleExpiry() // not answered: ask again (or, too close to exp now, expire there)
      })
    }, at).unref()
    return true
  }

  private cleanup (): void {
    this.ended = true
    clearTimeout(this.expiry)
    if (this.waitsFor !== undefined) { expiries.delete(this, this.waitsFor); this.waitsFor = undefined }
    this.outbox.clear()
    for (const [channel, state] of this.subs) {
      state.current = false
      this.services.hub.unsubscribe(this, channel)
    }
    this.subs.clear()
    this.services.registry.delete(this)
    this.services.registry.untrack(this)
  }
}

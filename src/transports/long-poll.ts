import type { Publication } from '../bus/broker.js'
import type { SubscribeResult } from '../hub/sink.js'
import type { Principal } from '../auth/permissions.js'
import type { Session } from '../session/session.js'
import type { Admission, Sessions } from '../session/sessions.js'
import type { Connection } from '../session/registry.js'
import type { StreamRequest } from './stream-request.js'
import type { DeliveryCounts, Transport } from './transport.js'
import { CloseCodes } from '../protocol/codes.js'
import { Errors, asHeraldError, type HeraldError } from '../errors.js'

export type PollAnswer = { body: string } | { error: HeraldError }

/** Most events one long-poll answer carries; the rest follow on the next poll (its cursor stops before them). */
export const MAX_POLL_EVENTS = 1000

/** One waiting poll request: a connection of the registry (counted, drained) until it is answered. */
class Waiter implements Connection {
  readonly transportName = 'long-poll'
  timer?: NodeJS.Timeout
  timedOut = false
  done = false
  constructor (readonly id: string, readonly sub: string, readonly respond: (answer: PollAnswer) => void, readonly end: (waiter: Waiter) => void) {}
  close (): void { this.end(this) }
}

/**
 * A long-poll session's transport: it gathers events (and recovery notices) into the next answer, and answers
 * every poll waiting on the session with the same body, built once. Between polls the session lives on for
 * POLL_LINGER seconds, keyed by the cursor it answered with, so the next poll from that cursor (from this client,
 * or any other at the same place) continues it without reading history again. The answer's cursor carries every
 * channel's position, so the next poll may just as well go to any other node.
 */
export class PollTransport implements Transport {
  readonly name = 'long-poll'
  readonly bidirectional = false
  session!: Session
  /** Its key in PollSessions (channels and positions). */
  key = ''
  lastUsed = Date.now()
  /** Initial subscriptions still being set up: nothing is answered before they are (they bring the positions). */
  pendingSubscribes = 0
  private frames: string[] = []
  private bytes = 0
  private recovery: string[] = []
  private readonly waiting = new Set<Waiter>()
  private answerScheduled = false
  private linger?: NodeJS.Timeout

  constructor (readonly channels: readonly string[], private readonly owner: PollSessions) {}

  get idle (): boolean { return this.waiting.size === 0 }

  /** Past MAX_POLL_EVENTS the answer is full: the outbox holds (or, live, sheds) the rest for the next poll. */
  buffered (): number { return this.frames.length >= MAX_POLL_EVENTS ? Number.POSITIVE_INFINITY : this.bytes }

  /** Control frames have no place in a poll answer: requests fail with an HTTP error instead. */
  send (): void {}

  subscribed (_text: string, result: SubscribeResult): void {
    if (result.recovered === false && result.reason !== undefined) {
      this.recovery.push(JSON.stringify({ channel: result.channel, recovered: false, reason: result.reason, offset: result.offset, epoch: result.epoch }))
      this.answerSoon()
    }
  }

  event (pub: Publication): void {
    this.frames.push(pub.frame)
    this.bytes += pub.frame.length
    this.answerSoon()
  }

  /** The session ends: whoever waits gets what was gathered (the cursor says where the next poll resumes). */
  close (): void {
    clearTimeout(this.linger)
    this.owner.forget(this)
    this.answer()
  }

  /** A poll waits here until there is something to answer, or its timeout; `cancel` when its client goes away. */
  wait (principal: Principal, timeoutSeconds: number, respond: (answer: PollAnswer) => void): { cancel: () => void } {
    clearTimeout(this.linger)
    this.lastUsed = Date.now()
    const waiter = new Waiter(this.owner.sessions.registry.newId(), principal.sub, respond, () => this.answerOne(waiter))
    // Even a zero timeout waits for the subscriptions: they bring the replay and the positions of the answer.
    waiter.timer = setTimeout(() => {
      waiter.timedOut = true
      if (this.pendingSubscribes === 0) this.answerOne(waiter)
    }, timeoutSeconds * 1000)
    this.waiting.add(waiter)
    this.owner.sessions.registry.add(waiter)
    this.answerSoon()
    return { cancel: () => { this.settle(waiter); this.lingerOn() } }
  }

  /** The initial subscriptions are set up: answer at once if there is something, or if a poll timed out meanwhile. */
  ready (): void {
    this.answerSoon()
    for (const w of [...this.waiting]) if (w.timedOut) this.answerOne(w)
  }

  /** Setting the session up failed: every waiting poll gets the error, and the session ends. */
  fail (err: unknown): void {
    const error = asHeraldError(err)
    for (const w of [...this.waiting]) { this.settle(w); w.respond({ error }) }
    this.session.close(CloseCodes.NORMAL, 'subscribe failed')
  }

  private answerSoon (): void {
    if (this.answerScheduled || this.waiting.size === 0 || this.pendingSubscribes > 0) return
    if (this.frames.length === 0 && this.recovery.length === 0) return
    // After one tick, to batch what arrives together.
    this.answerScheduled = true
    setImmediate(() => { this.answerScheduled = false; this.answer() })
  }

  /** Answers every waiting poll with one body, built once; the session then waits for the next poll, keyed anew. */
  private answer (): void {
    if (this.waiting.size === 0) return
    const answer = { body: this.body() }
    this.owner.delivered['long-poll'] += this.frames.length * this.waiting.size
    for (const w of [...this.waiting]) { this.settle(w); w.respond(answer) }
    this.frames = []
    this.bytes = 0
    this.recovery = []
    this.answered()
  }

  /** A poll whose timeout came (or that is closed) with nothing gathered: it alone gets the empty answer. */
  private answerOne (waiter: Waiter): void {
    if (waiter.done) return
    if (this.frames.length > 0 || this.recovery.length > 0) { this.answer(); return }
    this.settle(waiter)
    waiter.respond({ body: this.body() })
    this.answered()
  }

  private answered (): void {
    if (this.session.closed) return
    this.owner.rekey(this)
    this.lingerOn()
  }

  private body (): string {
    const recovery = this.recovery.length > 0 ? ',"recovery":[' + this.recovery.join(',') + ']' : ''
    return '{"events":[' + this.frames.join(',') + '],"cursor":' + JSON.stringify(this.session.cursor.encode()) + recovery + '}'
  }

  private settle (waiter: Waiter): void {
    waiter.done = true
    clearTimeout(waiter.timer)
    this.waiting.delete(waiter)
    this.owner.sessions.registry.delete(waiter)
  }

  /** No poll waiting: the session lingers for the next one (POLL_LINGER), then ends. */
  private lingerOn (): void {
    if (this.waiting.size > 0 || this.session.closed) return
    this.lastUsed = Date.now()
    clearTimeout(this.linger)
    this.linger = setTimeout(() => this.session.close(CloseCodes.NORMAL, 'long-poll session idle'), this.owner.lingerMs).unref()
  }
}

/** The key of a poll: its channels, sorted, each with the position it resumes from. */
function keyOf (channels: readonly string[], positions: (channel: string) => { offset: number, epoch: string } | undefined): string {
  return [...channels].sort().map((channel) => {
    const pos = positions(channel)
    return pos === undefined ? channel : channel + '=' + pos.offset + '@' + pos.epoch
  }).join(',')
}

export interface PollSessionOptions {
  lingerMs: number
  delivered: DeliveryCounts
  /** Most long-poll sessions on this node, and per token subject (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SUB). */
  maxSessions: number
  maxSessionsPerSub: number
}

/**
 * The long-poll sessions of this node, by key. A poll from a cursor joins the session that answered with that
 * cursor (or is at the same place), or starts a new one that resumes from the cursor. Sessions are bounded per
 * node and per subject; past a bound, the least recently used idle one makes room.
 */
export class PollSessions {
  private readonly byKey = new Map<string, PollTransport>()
  private readonly all = new Set<PollTransport>()
  private readonly bySub = new Map<string, Set<PollTransport>>()
  readonly lingerMs: number
  readonly delivered: DeliveryCounts

  constructor (readonly sessions: Sessions, private readonly options: PollSessionOptions) {
    this.lingerMs = options.lingerMs
    this.delivered = options.delivered
    sessions.onDrain(() => { for (const t of [...this.all]) t.session.close(CloseCodes.SERVICE_RESTART, 'server shutting down') })
  }

  get size (): number { return this.all.size }

  /** Waits for the answer to one poll (admitted already: its waiting takes over the place `admission` holds). */
  poll (principal: Principal, request: StreamRequest, timeoutSeconds: number, onClose: (cancel: () => void) => void, admission?: Admission): Promise<PollAnswer> {
    const key = keyOf(request.channels, (channel) => request.cursor.get(channel))
    const transport = this.byKey.get(key) ?? this.start(principal, request, key)
    return new Promise((resolve) => {
      const { cancel } = transport.wait(principal, timeoutSeconds, resolve)
      admission?.release()
      onClose(cancel)
    })
  }

  rekey (transport: PollTransport): void {
    if (this.byKey.get(transport.key) === transport) this.byKey.delete(transport.key)
    transport.key = keyOf(transport.channels, (channel) => transport.session.cursor.get(channel))
    // Another session already at the same place keeps the key; this one just lingers and ends.
    if (!this.byKey.has(transport.key)) this.byKey.set(transport.key, transport)
  }

  forget (transport: PollTransport): void {
    if (!this.all.delete(transport)) return
    if (this.byKey.get(transport.key) === transport) this.byKey.delete(transport.key)
    const mine = this.bySub.get(transport.session.sub)
    mine?.delete(transport)
    if (mine?.size === 0) this.bySub.delete(transport.session.sub)
  }

  private start (principal: Principal, request: StreamRequest, key: string): PollTransport {
    this.makeRoom(principal.sub)
    const transport = new PollTransport(request.channels, this)
    transport.key = key
    const session = this.sessions.open(transport, principal, { presence: false, quiet: true, connection: false })
    transport.session = session
    this.all.add(transport)
    this.byKey.set(key, transport)
    let mine = this.bySub.get(principal.sub)
    if (mine === undefined) this.bySub.set(principal.sub, mine = new Set())
    mine.add(transport)
    subscribeAll(transport, request)
    return transport
  }

  /** Keeps the sessions within their bounds, ending idle ones (least recently used first) if it must. */
  private makeRoom (sub: string): void {
    const mine = this.bySub.get(sub)
    if (mine !== undefined && mine.size >= this.options.maxSessionsPerSub) this.evictIdle(mine, `${this.options.maxSessionsPerSub} long-poll sessions for ${sub} on this node`)
    if (this.all.size >= this.options.maxSessions) this.evictIdle(this.all, `${this.options.maxSessions} long-poll sessions on this node`)
  }

  private evictIdle (candidates: Iterable<PollTransport>, limit: string): void {
    let oldest: PollTransport | undefined
    for (const t of candidates) if (t.idle && (oldest === undefined || t.lastUsed < oldest.lastUsed)) oldest = t
    if (oldest === undefined) throw new Errors.TOO_MANY_CONNECTIONS(limit)
    oldest.session.close(CloseCodes.NORMAL, 'long-poll session evicted to make room')
  }
}

function subscribeAll (transport: PollTransport, request: StreamRequest): void {
  const { session } = transport
  transport.pendingSubscribes = transport.channels.length
  for (const channel of transport.channels) {
    const pos = request.cursor.get(channel)
    if (pos !== undefined) session.cursor.set(channel, pos)
    let subscribing
    try {
      subscribing = session.subscribe(channel, pos)
    } catch (err) {
      session.close(CloseCodes.NORMAL, 'subscribe refused')
      throw err
    }
    subscribing.then(() => {
      if (--transport.pendingSubscribes === 0) transport.ready()
    }, (err: unknown) => { transport.pendingSubscribes = 0; transport.fail(err) })
  }
}

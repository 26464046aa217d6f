import type { Publication } from '../bus/broker.js'
import type { SubscribeResult } from '../hub/sink.js'
import type { Principal } from '../auth/permissions.js'
import type { Session } from '../session/session.js'
import type { Connection } from '../session/registry.js'
import type { Transport } from './transport.js'
import { CloseCodes, shouldReconnect } from '../protocol/codes.js'
import { encodeCursor, type StreamPosition } from '../protocol/cursor.js'
import { frame } from '../protocol/frames.js'
import { asHeraldError, type HeraldError } from '../errors.js'
import type { PollSessions } from './poll-sessions.js'

export type PollAnswer = { body: string } | { error: HeraldError }

/** Most events one long-poll answer carries; the rest follow on the next poll (its cursor stops before them). */
export const MAX_POLL_EVENTS = 1000

/** Why a session ended, when its answer must say so (see endsForGood). */
export interface Ending { code: number, reason: string }

/** The `disconnect` member of a poll answer (the SSE `disconnect` frame without its type). */
export function disconnectJson (ending: Ending): string {
  return frame.disconnect(ending.code, ending.reason).replace('{"type":"disconnect",', '{')
}

/**
 * A session or poll closed with a terminal code (4500–4999: the server API's disconnect and revoke, a backend's own)
 * is ended for good: its answer says so, with `disconnect`. Not an expired token (4501): the session's token is
 * its first poll's, and later polls may carry a renewed one; they simply go on in a new session.
 */
function endsForGood (code: number): boolean { return !shouldReconnect(code) && code !== CloseCodes.TOKEN_EXPIRED }

/** One waiting poll request: a connection of the registry (counted, drained) until it is answered. */
class Waiter implements Connection {
  readonly transportName = 'long-poll'
  timer?: NodeJS.Timeout
  timedOut = false
  done = false
  readonly sub: string
  constructor (readonly id: string, readonly principal: Principal, readonly respond: (answer: PollAnswer) => void, readonly end: (waiter: Waiter, ending?: Ending) => void) {
    this.sub = principal.sub
  }
  close (code?: number, reason?: string): void {
    this.end(this, code !== undefined && endsForGood(code) ? { code, reason: reason ?? '' } : undefined)
  }
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
  /** Its key in PollSessions (channels and positions; with the subject when `personal`). */
  key = ''
  /** The positions its key names: those of the last answer's cursor (of the request's, before any). */
  keyPositions = new Map<string, StreamPosition>()
  /** The server API gave it subscriptions of its own: only polls of its subject continue it (see personalise). */
  personal = false
  lastUsed = Date.now()
  /** Initial subscriptions still being set up: nothing is answered before they are (they bring the positions). */
  pendingSubscribes = 0
  private frames: string[] = []
  private bytes = 0
  private recovery: string[] = []
  /** Subscriptions the server API made or ended since the last answer, and why the session ended (if it must say). */
  private serverSubscribed: string[] = []
  private serverUnsubscribed: string[] = []
  private ending?: Ending
  private readonly waiting = new Set<Waiter>()
  private answerScheduled = false
  private linger?: NodeJS.Timeout
  /** The answer for a poll that times out with nothing gathered: built once per position, shared by all such polls. */
  private empty?: { cursor: string, body: string }

  /** `channels`: those the polls ask for (the key's); server API subscriptions are the session's, not in it. */
  constructor (readonly channels: string[], private readonly owner: PollSessions) {}

  get idle (): boolean { return this.waiting.size === 0 }

  /** Past MAX_POLL_EVENTS the answer is full: the outbox holds (or, live, sheds) the rest for the next poll. */
  buffered (): number { return this.frames.length >= MAX_POLL_EVENTS ? Number.POSITIVE_INFINITY : this.bytes }

  /**
   * Control frames have no place in a poll answer (requests fail with an HTTP error instead), except the end of a
   * subscription by the server API: the answer lists it, and the session's key no longer names the channel.
   */
  send (text: string): void {
    if (!text.startsWith('{"type":"unsubscribed"')) return
    const { channel, reason } = JSON.parse(text) as { channel: string, reason?: string }
    if (reason !== 'server') return
    this.serverUnsubscribed.push(JSON.stringify({ channel, reason }))
    const at = this.channels.indexOf(channel)
    if (at !== -1) { this.channels.splice(at, 1); this.owner.rekey(this, false) }
    this.answerSoon()
  }

  subscribed (_text: string, result: SubscribeResult): void {
    if (this.session.isServerSubscription(result.channel)) {
      const { channel, offset, epoch, recovered, reason, replayed } = result
      this.serverSubscribed.push(JSON.stringify({ channel, offset, epoch, recovered, reason, replayed, server: true }))
      this.answerSoon()
      return
    }
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

  /**
   * The session ends: whoever waits gets what was gathered (the cursor says where the next poll resumes). Ended for
   * good (endsForGood), the polls of its subject are told so (`disconnect`); with none waiting, the next poll of its
   * subject from its place on this node is. A revocation is told only to polls carrying a revoked token, and those
   * the server API answers one by one (control/actions.ts): the others here may carry a newer token.
   */
  close (code: number = CloseCodes.NORMAL, reason = ''): void {
    clearTimeout(this.linger)
    if (endsForGood(code) && code !== CloseCodes.TOKEN_REVOKED) this.ending = { code, reason }
    this.owner.forget(this)
    if (this.ending !== undefined && this.waiting.size === 0) this.owner.remember(this, this.ending)
    this.answer()
  }

  /**
   * The server API is about to give this session a subscription of its own: from now on only polls of its subject
   * continue it. Polls of other subjects waiting on it (at the same place) are answered first, and come back to
   * another session.
   */
  personalise (): void {
    if (this.personal) return
    const others = [...this.waiting].filter((w) => w.sub !== this.session.sub)
    if (others.length > 0) {
      if (this.hasNews()) this.answer()
      else for (const w of others) this.answerOne(w)
    }
    this.personal = true
    if (!this.session.closed) this.owner.rekey(this, false)
  }

  /** A poll waits here until there is something to answer, or its timeout; `cancel` when its client goes away. */
  wait (principal: Principal, timeoutSeconds: number, respond: (answer: PollAnswer) => void): { cancel: () => void } {
    clearTimeout(this.linger)
    this.lastUsed = Date.now()
    const waiter = new Waiter(this.owner.sessions.registry.newId(), principal, respond, (w, ending) => this.answerOne(w, ending))
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
    if (!this.hasNews()) return
    // After one tick, to batch what arrives together.
    this.answerScheduled = true
    setImmediate(() => { this.answerScheduled = false; this.answer() })
  }

  /** Answers every waiting poll with one body, built once; the session then waits for the next poll, keyed anew. */
  private answer (): void {
    if (this.waiting.size === 0) return
    const answer = { body: this.body() }
    // An ending is the session's subject's: polls of others at the same place just go on elsewhere.
    const ended = this.ending === undefined ? answer : { body: this.body(this.ending) }
    this.owner.delivered['long-poll'] += this.frames.length * this.waiting.size
    for (const w of [...this.waiting]) { this.settle(w); w.respond(w.sub === this.session.sub ? ended : answer) }
    this.frames = []
    this.bytes = 0
    this.recovery = []
    this.serverSubscribed = []
    this.serverUnsubscribed = []
    this.answered()
  }

  /**
   * A poll whose timeout came (or that is closed) with nothing gathered: it alone gets the empty answer; `ending`
   * when it alone is ended for good (the server API disconnected its subject, whose poll waits on another's session).
   */
  private answerOne (waiter: Waiter, ending?: Ending): void {
    if (waiter.done) return
    if (ending === undefined && this.hasNews()) { this.answer(); return }
    this.settle(waiter)
    waiter.respond({ body: ending === undefined ? this.emptyBody() : this.body(ending, false) })
    if (ending === undefined) this.answered()
    else this.lingerOn()
  }

  /** Nothing gathered: no events and the session's cursor, the same for every poll that times out at this position. */
  private emptyBody (): string {
    const cursor = this.session.cursor.encode()
    if (this.empty?.cursor !== cursor) this.empty = { cursor, body: '{"events":[],"cursor":' + JSON.stringify(cursor) + '}' }
    return this.empty.body
  }

  private hasNews (): boolean {
    return this.frames.length > 0 || this.recovery.length > 0 || this.serverSubscribed.length > 0 || this.serverUnsubscribed.length > 0
  }

  private answered (): void {
    if (this.session.closed) return
    this.owner.rekey(this, true)
    this.lingerOn()
  }

  /** The answer: events, the cursor after them, and what else the poll must know. `gathered: false` leaves them for the others. */
  private body (ending?: Ending, gathered = true): string {
    const list = (name: string, items: string[]): string => gathered && items.length > 0 ? ',"' + name + '":[' + items.join(',') + ']' : ''
    return '{"events":[' + (gathered ? this.frames.join(',') : '') + '],"cursor":' + JSON.stringify(gathered ? this.session.cursor.encode() : encodeCursor(this.keyPositions)) +
      list('recovery', this.recovery) + list('subscribed', this.serverSubscribed) + list('unsubscribed', this.serverUnsubscribed) +
      (ending === undefined ? '' : ',"disconnect":' + disconnectJson(ending)) + '}'
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

import type { Publication } from '../bus/broker.js'
import type { HeraldContext } from '../context.js'
import type { Sink, SubscribeResult, RecoveryFailure } from '../hub/hub.js'
import type { Connection } from '../hub/connections.js'
import type { StreamRequest } from './stream-request.js'
import { type Cursor, encodeCursor } from '../protocol/cursor.js'
import { Errors, isHeraldError, type HeraldError } from '../errors.js'

export type PollAnswer = { body: string } | { error: HeraldError }

/** Most events one long-poll answer carries; the rest follow on the next poll (its cursor stops before them). */
export const MAX_POLL_EVENTS = 1000

export interface PollRecovery { channel: string, recovered: false, reason: RecoveryFailure, offset: number, epoch: string }

/**
 * One waiting long-poll request. It subscribes like a stream (resuming from the cursor), answers as soon as it
 * holds at least one event or recovery notice (after one tick, to batch what arrives together), or empty at the
 * timeout, and unsubscribes. The answer's cursor carries every channel's position, so the next poll may go to
 * any node.
 */
export class PollWaiter implements Sink, Connection {
  readonly transport = 'poll' as const
  readonly id: string
  private readonly positions: Cursor = new Map()
  private readonly frames: string[] = []
  private readonly recovery: PollRecovery[] = []
  private readonly channels: string[] = []
  /** Channels whose events past the batch cap were left for the next poll. */
  private readonly full = new Set<string>()
  private timer?: NodeJS.Timeout
  private flushScheduled = false
  private pendingSubscribes = 0
  /** The timeout passed while subscriptions were still being set up: answer as soon as they are. */
  private timedOut = false
  private done = false

  constructor (private readonly ctx: HeraldContext, private readonly respond: (answer: PollAnswer) => void) {
    this.id = ctx.connections.newId()
    ctx.connections.add(this)
  }

  start (request: StreamRequest, timeoutSeconds: number): void {
    for (const [channel, pos] of request.cursor) this.positions.set(channel, { ...pos })
    this.pendingSubscribes = request.channels.length
    // Even a zero timeout waits for the subscriptions: they bring the replay and the positions of the answer.
    this.timer = setTimeout(() => {
      this.timedOut = true
      if (this.pendingSubscribes === 0) this.finish()
    }, timeoutSeconds * 1000)
    for (const channel of request.channels) {
      this.channels.push(channel)
      this.ctx.hub.subscribe(this, channel, request.cursor.get(channel)).then(
        () => {
          this.pendingSubscribes--
          if (this.timedOut && this.pendingSubscribes === 0) this.finish()
          else this.maybeFlush()
        },
        (err: unknown) => { this.pendingSubscribes--; this.finish(isHeraldError(err) ? err : new Errors.INTERNAL()) })
    }
  }

  subscribed (result: SubscribeResult): void {
    if (this.done) { this.ctx.hub.unsubscribe(this, result.channel); return }
    this.positions.set(result.channel, { offset: result.offset, epoch: result.epoch })
    if (result.recovered === false && result.reason !== undefined) {
      this.recovery.push({ channel: result.channel, recovered: false, reason: result.reason, offset: result.offset, epoch: result.epoch })
    }
  }

  deliver (pub: Publication): void {
    if (this.done || this.full.has(pub.channel)) return
    if (this.frames.length >= MAX_POLL_EVENTS) { this.full.add(pub.channel); this.maybeFlush(); return }
    this.frames.push(pub.frame)
    this.positions.set(pub.channel, { offset: pub.offset, epoch: pub.epoch })
    this.ctx.metrics.delivered.poll++
    this.maybeFlush()
  }

  lost (channel: string, reason: RecoveryFailure): void {
    // The next poll, from the cursor we answer with now, will be told `recovered: false` for this channel.
    if (this.done) return
    this.ctx.log.debug({ channel, reason }, 'long-poll channel lost its position')
    this.finish()
  }

  close (): void { this.finish() }

  private maybeFlush (): void {
    if (this.done || this.flushScheduled || this.pendingSubscribes > 0) return
    if (this.frames.length === 0 && this.recovery.length === 0) return
    this.flushScheduled = true
    setImmediate(() => this.finish())
  }

  private finish (error?: HeraldError): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.timer)
    for (const channel of this.channels) this.ctx.hub.unsubscribe(this, channel)
    this.ctx.connections.delete(this)
    if (error !== undefined) { this.respond({ error }); return }
    const recovery = this.recovery.length > 0 ? ',"recovery":' + JSON.stringify(this.recovery) : ''
    this.respond({ body: '{"events":[' + this.frames.join(',') + '],"cursor":' + JSON.stringify(encodeCursor(this.positions)) + recovery + '}' })
  }
}

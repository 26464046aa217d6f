import type { ServerResponse } from 'node:http'
import type { Publication } from '../bus/broker.js'
import type { HeraldContext } from '../context.js'
import type { Sink, SubscribeResult, RecoveryFailure } from '../hub/hub.js'
import type { Connection } from '../hub/connections.js'
import type { Principal } from '../auth/permissions.js'
import type { PresenceMember } from '../presence/presence.js'
import type { StreamRequest } from './stream-request.js'
import { type Cursor, encodeCursor } from '../protocol/cursor.js'
import { CloseCodes } from '../protocol/codes.js'
import { Errors, isHeraldError } from '../errors.js'
import { errorFrame } from './transport.js'
import { Outbox } from './outbox.js'
import type { NamespaceOptions } from '../namespaces.js'

/**
 * One Server-Sent Events stream. Each message's `data:` is a server frame (the same JSON as on the WebSocket);
 * every `subscribed` and `event` message carries an `id:` holding the cursor of all the stream's channels,
 * so a reconnect with `Last-Event-ID` resumes every channel exactly after the last message received — on any node.
 */
export class SseSession implements Sink, Connection {
  readonly transport = 'sse' as const
  readonly id: string
  private readonly positions: Cursor = new Map()
  /** Subscribed channels and their namespace options. */
  private readonly channels = new Map<string, NamespaceOptions | undefined>()
  private readonly outbox: Outbox
  private closed = false
  private readonly heartbeat: NodeJS.Timeout
  readonly openedAt = Date.now()
  readonly member: PresenceMember
  readonly sub: string
  private readonly expiry?: NodeJS.Timeout

  constructor (private readonly ctx: HeraldContext, private readonly res: ServerResponse, readonly principal: Principal, headers: Record<string, string | number | string[] | undefined>) {
    this.id = ctx.connections.newId()
    this.sub = principal.sub
    if (principal.exp !== undefined && principal.exp * 1000 - Date.now() < 0x7fffffff) {
      this.expiry = setTimeout(() => this.close(CloseCodes.TOKEN_EXPIRED, 'token expired: reconnect with a new token'), Math.max(0, principal.exp * 1000 - Date.now())).unref()
    }
    this.member = { sub: principal.sub, client: this.id, connectedAt: this.openedAt, info: principal.info }
    this.outbox = new Outbox({
      buffered: () => res.writableLength,
      write: (pub) => this.writeEvent(pub),
      evict: () => {
        ctx.metrics.evictions.inc({ transport: 'sse', reason: 'disconnect' })
        this.close(CloseCodes.SLOW_CONSUMER, 'slow consumer: reconnect with Last-Event-ID to resume')
      },
      // A stream cannot resubscribe one channel: end it, and the reconnect resumes from the last id received.
      dropped: () => {
        ctx.metrics.evictions.inc({ transport: 'sse', reason: 'dropped' })
        this.close(CloseCodes.SLOW_CONSUMER, 'slow consumer: events dropped; reconnect with Last-Event-ID to resume')
      }
    }, ctx.config.maxBufferBytes)
    res.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no'
    })
    res.socket?.setNoDelay(true)
    res.write('retry: 1000\n' + this.message(JSON.stringify({ type: 'connected', client: this.id, sub: principal.sub, pingInterval: ctx.config.sseHeartbeatSeconds })))
    this.heartbeat = setInterval(() => this.write(': hb\n\n'), ctx.config.sseHeartbeatSeconds * 1000).unref()
    res.on('close', () => {
      if (!this.closed) ctx.log.info({ client: this.id, sub: principal.sub, reason: 'client closed', ms: Date.now() - this.openedAt }, 'sse stream closed')
      this.cleanup()
    })
    ctx.connections.add(this)
  }

  /** Subscribes every requested channel, resuming those the cursor has a position for. */
  start (request: StreamRequest): void {
    for (const [channel, pos] of request.cursor) this.positions.set(channel, pos)
    for (const channel of request.channels) {
      this.channels.set(channel, this.ctx.namespaces.of(channel))
      this.ctx.hub.subscribe(this, channel, request.cursor.get(channel)).catch((err: unknown) => {
        if (this.closed) return
        const herr = isHeraldError(err) ? err : new Errors.INTERNAL()
        this.ctx.metrics.errors.inc({ code: herr.code })
        this.write(this.message(errorFrame(herr, undefined, channel)))
        this.close(CloseCodes.SERVICE_RESTART, 'subscribe failed: ' + herr.code)
      })
    }
  }

  subscribed (result: SubscribeResult): void {
    if (this.closed) { this.ctx.hub.unsubscribe(this, result.channel); return }
    this.positions.set(result.channel, { offset: result.offset, epoch: result.epoch })
    this.write(this.message(JSON.stringify({ type: 'subscribed', ...result }), encodeCursor(this.positions)))
  }

  deliver (pub: Publication, replay = false): void {
    if (this.closed) return
    this.outbox.push(pub, this.channels.get(pub.channel), replay)
  }

  private writeEvent (pub: Publication): void {
    if (this.closed) return
    const pos = this.positions.get(pub.channel)
    if (pos !== undefined && pos.epoch === pub.epoch) pos.offset = pub.offset
    else this.positions.set(pub.channel, { offset: pub.offset, epoch: pub.epoch })
    this.write('id: ' + encodeCursor(this.positions) + '\ndata: ' + pub.frame + '\n\n')
    this.ctx.metrics.delivered.sse++
  }

  notify (_channel: string, frame: string): void {
    this.write(this.message(frame))
  }

  /** The stream cannot continue this channel without a gap: end it, so the client reconnects and learns `recovered: false`. */
  lost (channel: string, reason: RecoveryFailure): void {
    if (this.closed) return
    this.write(this.message(JSON.stringify({ type: 'unsubscribed', channel, reason: 'insufficient_state: ' + reason, resubscribe: true })))
    this.close(CloseCodes.INSUFFICIENT_STATE, 'insufficient state')
  }

  close (code: number, reason: string): void {
    if (this.closed) return
    this.write(this.message(JSON.stringify({ type: 'disconnect', code, reason, reconnect: code < 4500 })))
    this.ctx.log.info({ client: this.id, sub: this.principal.sub, code, reason, ms: Date.now() - this.openedAt }, 'closing sse stream')
    this.cleanup()
    this.res.end()
  }

  private message (data: string, id?: string): string {
    return (id === undefined ? '' : 'id: ' + id + '\n') + 'data: ' + data + '\n\n'
  }

  private write (text: string): void {
    if (!this.closed) this.res.write(text)
  }

  private cleanup (): void {
    if (this.closed) return
    this.closed = true
    clearInterval(this.heartbeat)
    clearTimeout(this.expiry)
    this.outbox.clear()
    for (const channel of this.channels.keys()) this.ctx.hub.unsubscribe(this, channel)
    this.ctx.connections.delete(this)
  }
}

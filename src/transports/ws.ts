import type { WebSocket, RawData } from 'ws'
import type { Publication } from '../bus/broker.js'
import type { HeraldContext } from '../context.js'
import type { Sink, SubscribeResult, RecoveryFailure } from '../hub/hub.js'
import type { Connection } from '../hub/connections.js'
import type { Principal } from '../auth/permissions.js'
import type { PresenceMember } from '../presence/presence.js'
import type { PresenceFrame, PublishFrame, SubscribeFrame, UnsubscribeFrame } from '../protocol/frames.js'
import { can } from '../auth/permissions.js'
import { CloseCodes } from '../protocol/codes.js'
import { parseClientFrame } from '../protocol/parse.js'
import { Errors, isHeraldError, type HeraldError } from '../errors.js'
import { errorFrame, frameBytes } from './transport.js'
import { presenceOf } from '../presence/query.js'

type SubState = 'pending' | 'active'

/**
 * One WebSocket connection: a hub sink for its subscriptions and the handler of its client frames.
 * Every client frame with an `id` is answered by exactly one `ack` or `error` carrying that id.
 */
export class WsSession implements Sink, Connection {
  readonly transport = 'ws' as const
  readonly id: string
  private readonly subs = new Map<string, SubState>()
  private closed = false
  /** Heartbeat: set on every pong; a ping round that finds it false terminates the connection. */
  alive = true
  readonly openedAt = Date.now()
  readonly member: PresenceMember

  constructor (private readonly ctx: HeraldContext, private readonly socket: WebSocket, readonly principal: Principal) {
    this.id = ctx.connections.newId()
    this.member = { sub: principal.sub, client: this.id, connectedAt: this.openedAt, info: principal.info }
    socket.on('message', (data, isBinary) => this.onMessage(data, isBinary))
    socket.on('pong', () => { this.alive = true })
    socket.on('close', (code, reason) => this.onClose(code, reason.toString()))
    ctx.connections.add(this)
    this.send(JSON.stringify({ type: 'connected', client: this.id, sub: principal.sub, pingInterval: ctx.config.wsPingIntervalSeconds }))
  }

  // ---- Sink ----

  subscribed (result: SubscribeResult): void {
    // Closed or unsubscribed while the hub was still setting the subscription up: undo it.
    if (this.closed || !this.subs.has(result.channel)) { this.ctx.hub.unsubscribe(this, result.channel); return }
    this.subs.set(result.channel, 'active')
    this.send(JSON.stringify({ type: 'subscribed', ...result }))
  }

  deliver (pub: Publication): void {
    if (this.closed || !this.subs.has(pub.channel)) return
    // Backpressure: a client that does not read must not grow this process's memory without bound.
    if (this.socket.bufferedAmount > this.ctx.config.maxBufferBytes) {
      this.close(CloseCodes.SLOW_CONSUMER, 'slow consumer: reconnect and resume from your last offsets')
      return
    }
    this.socket.send(frameBytes(pub), { binary: false })
    this.ctx.metrics.delivered.ws++
  }

  notify (channel: string, frame: string): void {
    if (!this.closed && this.subs.get(channel) === 'active') this.socket.send(frame)
  }

  lost (channel: string, reason: RecoveryFailure): void {
    if (this.closed) return
    this.subs.delete(channel)
    this.send(JSON.stringify({ type: 'unsubscribed', channel, reason: 'insufficient_state: ' + reason, resubscribe: true }))
  }

  // ---- Connection ----

  close (code: number, reason: string): void {
    if (this.closed) return
    this.ctx.log.info({ client: this.id, sub: this.principal.sub, code, reason, ms: Date.now() - this.openedAt }, 'closing websocket')
    this.socket.close(code, reason)
    this.cleanup()
    // A peer that never answers the close handshake is cut off.
    setTimeout(() => this.socket.terminate(), 2000).unref()
  }

  ping (): void { this.socket.ping() }

  terminate (reason: string): void {
    if (this.closed) return
    this.ctx.log.info({ client: this.id, sub: this.principal.sub, reason }, 'terminating websocket')
    this.socket.terminate()
    this.cleanup()
  }

  // ---- client frames ----

  private onMessage (data: RawData, isBinary: boolean): void {
    if (this.closed) return
    const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer).byteLength
    if (size > this.ctx.config.maxFrameBytes) { this.fail(new Errors.FRAME_TOO_LARGE(this.ctx.config.maxFrameBytes)); return }
    if (isBinary) { this.fail(new Errors.BAD_FRAME('binary', 'frames are JSON text')); return }
    const parsed = parseClientFrame(data.toString())
    if (!parsed.ok) { this.fail(parsed.error, parsed.id, parsed.channel); return }
    const frame = parsed.frame
    switch (frame.type) {
      case 'subscribe': this.subscribe(frame); break
      case 'unsubscribe': this.unsubscribe(frame); break
      case 'publish': void this.publish(frame); break
      case 'ping': this.send(JSON.stringify({ type: 'pong', id: frame.id })); break
      case 'presence': void this.presence(frame); break
    }
  }

  private subscribe (frame: SubscribeFrame): void {
    const { channel, since, id } = frame
    if (!can(this.principal, 'subscribe', channel)) { this.fail(new Errors.FORBIDDEN('subscribe', channel), id, channel); return }
    if (!this.ctx.namespaces.of(channel)) { this.fail(new Errors.UNKNOWN_NAMESPACE(channel), id, channel); return }
    if (this.subs.has(channel)) { this.fail(new Errors.ALREADY_SUBSCRIBED(channel), id, channel); return }
    if (this.subs.size >= this.ctx.config.maxSubscriptions) { this.fail(new Errors.TOO_MANY_SUBSCRIPTIONS(this.ctx.config.maxSubscriptions), id, channel); return }
    this.subs.set(channel, 'pending')
    this.ctx.hub.subscribe(this, channel, since).then(
      () => { if (id !== undefined) this.ack(id, { channel }) },
      (err: unknown) => {
        if (this.subs.get(channel) === 'pending') this.subs.delete(channel)
        this.fail(err, id, channel)
      })
  }

  private unsubscribe (frame: UnsubscribeFrame): void {
    const { channel, id } = frame
    if (!this.subs.has(channel)) { this.fail(new Errors.NOT_SUBSCRIBED(channel), id, channel); return }
    this.subs.delete(channel)
    this.ctx.hub.unsubscribe(this, channel)
    this.send(JSON.stringify({ type: 'unsubscribed', channel, reason: 'client' }))
    if (id !== undefined) this.ack(id, { channel })
  }

  private async publish (frame: PublishFrame): Promise<void> {
    const { channel, data, event, id } = frame
    if (!can(this.principal, 'publish', channel)) { this.fail(new Errors.FORBIDDEN('publish', channel), id, channel); return }
    try {
      const ns = this.ctx.channelOptions(channel)
      if (!ns.clientPublish) throw new Errors.PUBLISH_DISABLED(channel)
      const result = await this.ctx.broker.publish({ channel, data, event, idempotencyKey: id, historySize: ns.historySize, historyTtlSeconds: ns.historyTtl })
      if (!result.duplicate) this.ctx.metrics.published.inc({ transport: 'ws' })
      if (id !== undefined) this.ack(id, result)
    } catch (err) {
      this.fail(err, id, channel)
    }
  }

  private async presence (frame: PresenceFrame): Promise<void> {
    const { channel, id } = frame
    try {
      const members = await presenceOf(this.ctx, this.principal, channel)
      this.send(JSON.stringify({ type: 'presence', channel, id, ...members }))
      if (id !== undefined) this.ack(id, { channel })
    } catch (err) {
      this.fail(err, id, channel)
    }
  }

  // ---- helpers ----

  private ack (id: string, body: object): void {
    this.send(JSON.stringify({ type: 'ack', id, ...body }))
  }

  private fail (err: unknown, id?: string, channel?: string): void {
    const herr: HeraldError = isHeraldError(err) ? err : new Errors.INTERNAL()
    if (!isHeraldError(err)) this.ctx.log.error({ err, client: this.id }, 'websocket frame failed')
    this.ctx.metrics.errors.inc({ code: herr.code })
    this.send(errorFrame(herr, id, channel))
  }

  private send (text: string): void {
    if (!this.closed) this.socket.send(text)
  }

  private onClose (code: number, reason: string): void {
    if (!this.closed) this.ctx.log.info({ client: this.id, sub: this.principal.sub, code, reason, ms: Date.now() - this.openedAt }, 'websocket closed')
    this.cleanup()
  }

  private cleanup (): void {
    if (this.closed) return
    this.closed = true
    for (const channel of this.subs.keys()) this.ctx.hub.unsubscribe(this, channel)
    this.subs.clear()
    this.ctx.connections.delete(this)
  }
}

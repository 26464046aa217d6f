import type { WebSocket, RawData } from 'ws'
import type { Publication } from '../bus/broker.js'
import type { HeraldContext } from '../context.js'
import type { Sink, SubscribeResult, RecoveryFailure } from '../hub/hub.js'
import type { Connection } from '../hub/connections.js'
import type { Principal } from '../auth/permissions.js'
import type { PresenceMember } from '../presence/presence.js'
import type { PresenceFrame, PublishFrame, RefreshFrame, SubscribeFrame, UnsubscribeFrame } from '../protocol/frames.js'
import { can } from '../auth/permissions.js'
import { CloseCodes } from '../protocol/codes.js'
import { parseClientFrame } from '../protocol/parse.js'
import { Errors, isHeraldError, type HeraldError } from '../errors.js'
import { errorFrame, frameBytes, wireFrame } from './transport.js'
import { Outbox, type OutboxTarget } from './outbox.js'
import { TokenBucket } from './admission.js'
import type { NamespaceOptions } from '../namespaces.js'
import { presenceOf } from '../presence/query.js'

interface SubState { active: boolean, ns: NamespaceOptions | undefined }

/** The parts of ws's WebSocket that the pre-framed write path relies on (ws 8). */
interface WsInternals { _socket: import('node:net').Socket | null, _sender: { _state: number } }
const SEND_TEXT = { binary: false }

/**
 * Sessions with frames waiting to be written at the end of this turn of the event loop. Everything the bus
 * hands over in one read (ioredis parses a whole chunk of messages in one go) is dispatched in one turn, so a
 * socket that gets several events in it gets them in one write: one syscall instead of one per event. With one
 * event per turn (an idle server) this costs an array push; under load it is what keeps the syscall count, and
 * so the CPU per delivery, from growing with the backlog.
 */
const batch: WsSession[] = []
let batchScheduled = false

function writeBatch (): void {
  batchScheduled = false
  for (let i = 0; i < batch.length; i++) batch[i].flush()
  batch.length = 0
}

/**
 * One WebSocket connection: a hub sink for its subscriptions and the handler of its client frames.
 * Every client frame with an `id` is answered by exactly one `ack` or `error` carrying that id.
 */
export class WsSession implements Sink, Connection, OutboxTarget {
  readonly transport = 'ws' as const
  readonly id: string
  private readonly subs = new Map<string, SubState>()
  private closed = false
  /** Heartbeat: set on every pong; a ping round that finds it false terminates the connection. */
  alive = true
  /** Which slice of the heartbeat interval pings this socket (set by the route's liveness loop). */
  heartbeatSlice = 0
  readonly openedAt = Date.now()
  private presenceMember?: PresenceMember
  private readonly outbox: Outbox
  private readonly bucket: TokenBucket
  /** Frames refused by the rate limit in the current 10 s window. */
  private refused = 0
  private refusedWindow = 0
  private expiry?: NodeJS.Timeout
  readonly sub: string
  /** No WebSocket extension (permessage-deflate) on this socket: pre-built frames can be written as they are. */
  private readonly plain: boolean
  /** Pre-built event frames of this turn, not yet written (see `batch`). */
  private pending: Buffer | Buffer[] | undefined = undefined
  private pendingBytes = 0

  constructor (private readonly ctx: HeraldContext, private readonly socket: WebSocket, public principal: Principal) {
    this.id = ctx.connections.newId()
    this.sub = principal.sub
    this.plain = socket.extensions === ''
    this.bucket = new TokenBucket(ctx.config.limits.wsRate, ctx.config.limits.wsBurst)
    this.scheduleExpiry()
    this.outbox = new Outbox(this, ctx.config.maxBufferBytes)
    socket.on('message', (data, isBinary) => this.onMessage(data, isBinary))
    socket.on('pong', () => { this.alive = true })
    socket.on('close', (code, reason) => this.onClose(code, reason.toString()))
    ctx.connections.add(this)
    this.send(JSON.stringify({ type: 'connected', client: this.id, sub: principal.sub, pingInterval: ctx.config.wsPingIntervalSeconds }))
  }

  /** Who this connection is in presence, built on first use (most connections never need it). */
  get member (): PresenceMember {
    this.presenceMember ??= { sub: this.principal.sub, client: this.id, connectedAt: this.openedAt, info: this.principal.info }
    return this.presenceMember
  }

  // ---- Sink ----

  subscribed (result: SubscribeResult): void {
    // Closed or unsubscribed while the hub was still setting the subscription up: undo it.
    const state = this.subs.get(result.channel)
    if (this.closed || state === undefined) { this.ctx.hub.unsubscribe(this, result.channel); return }
    state.active = true
    this.send(JSON.stringify({ type: 'subscribed', ...result }))
  }

  deliver (pub: Publication, replay = false): void {
    const state = this.subs.get(pub.channel)
    if (this.closed || state === undefined) return
    // Backpressure: a client that does not read must not grow this process's memory without bound.
    this.outbox.push(pub, state.ns, replay)
  }

  notify (channel: string, frame: string): void {
    if (!this.closed && this.subs.get(channel)?.active === true) { this.flush(); this.socket.send(frame) }
  }

  lost (channel: string, reason: RecoveryFailure): void {
    if (this.closed) return
    this.subs.delete(channel)
    this.outbox.discard(channel)
    this.send(JSON.stringify({ type: 'unsubscribed', channel, reason: 'insufficient_state: ' + reason, resubscribe: true }))
  }

  // ---- OutboxTarget ----

  buffered (): number { return this.socket.bufferedAmount + this.pendingBytes }

  evict (): void {
    this.ctx.metrics.evictions.inc({ transport: 'ws', reason: 'disconnect' })
    this.close(CloseCodes.SLOW_CONSUMER, 'slow consumer: reconnect and resume from your last offsets')
  }

  dropped (channel: string): void {
    this.ctx.metrics.evictions.inc({ transport: 'ws', reason: 'dropped' })
    if (!this.subs.delete(channel)) return
    this.ctx.hub.unsubscribe(this, channel)
    this.send(JSON.stringify({ type: 'unsubscribed', channel, reason: 'insufficient_state: slow_consumer', resubscribe: true }))
  }

  /**
   * Serialise once, frame once: with no extension negotiated (no compression) and ws's sender idle, the
   * publication's shared, pre-built WebSocket frame goes straight to the TCP socket — exactly the bytes
   * `socket.send` would write, without a header, an options object and two writes per subscriber — at the end
   * of this turn, together with any other event frames this socket gets in it (`batch`).
   */
  write (pub: Publication): void {
    const internals = this.socket as unknown as WsInternals
    const raw = internals._socket
    if (this.plain && internals._sender._state === 0 && this.socket.readyState === 1 && raw !== null && raw.writable) {
      const wire = wireFrame(pub)
      const pending = this.pending
      if (pending === undefined) {
        this.pending = wire
        batch.push(this)
        if (!batchScheduled) { batchScheduled = true; process.nextTick(writeBatch) }
      } else if (Array.isArray(pending)) {
        pending.push(wire)
      } else {
        this.pending = [pending, wire]
      }
      this.pendingBytes += wire.length
    } else {
      this.flush()
      this.socket.send(frameBytes(pub), SEND_TEXT)
    }
    this.ctx.metrics.delivered.ws++
  }

  /** Writes this turn's pending event frames, in one write; before any other frame, so order is kept. */
  flush (): void {
    const pending = this.pending
    if (pending === undefined) return
    this.pending = undefined
    const bytes = this.pendingBytes
    this.pendingBytes = 0
    const raw = (this.socket as unknown as WsInternals)._socket
    // Closed meanwhile: the frames go where ws would have put them after a close, nowhere.
    if (raw === null || !raw.writable || this.socket.readyState !== 1) return
    raw.write(Array.isArray(pending) ? Buffer.concat(pending, bytes) : pending)
  }

  // ---- Connection ----

  close (code: number, reason: string): void {
    if (this.closed) return
    this.flush()
    this.ctx.log.info({ client: this.id, sub: this.principal.sub, code, reason, ms: Date.now() - this.openedAt }, 'closing websocket')
    this.socket.close(code, reason)
    this.cleanup()
    // A peer that never answers the close handshake is cut off.
    setTimeout(() => this.socket.terminate(), 2000).unref()
  }

  ping (): void { this.socket.ping() }

  terminate (reason: string): void {
    if (this.closed) return
    this.ctx.log.info({ client: this.id, sub: this.principal.sub, reason, ms: Date.now() - this.openedAt }, 'terminating websocket')
    this.socket.terminate()
    this.cleanup()
  }

  // ---- client frames ----

  /**
   * No client input may take the node down: whatever handling one frame throws ends at most this connection
   * (close 1011), and is logged as the bug it is.
   */
  private onMessage (data: RawData, isBinary: boolean): void {
    try {
      this.handleMessage(data, isBinary)
    } catch (err) {
      this.ctx.log.error({ err, client: this.id }, 'websocket frame handling failed; closing the connection')
      this.ctx.metrics.errors.inc({ code: 'HERALD_ERR_INTERNAL' })
      this.close(CloseCodes.INTERNAL_ERROR, 'internal error')
    }
  }

  private handleMessage (data: RawData, isBinary: boolean): void {
    if (this.closed) return
    const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer).byteLength
    if (!this.bucket.take()) { this.rateLimited(); return }
    if (size > this.ctx.config.maxFrameBytes) { this.fail(new Errors.FRAME_TOO_LARGE(this.ctx.config.maxFrameBytes)); return }
    if (isBinary && !this.ctx.config.ws.acceptBinary) { this.fail(new Errors.BAD_FRAME('binary', 'frames are JSON text (or set WS_ACCEPT_BINARY)')); return }
    const parsed = parseClientFrame(data.toString())
    if (!parsed.ok) { this.fail(parsed.error, parsed.id, parsed.channel); return }
    const frame = parsed.frame
    switch (frame.type) {
      case 'subscribe': this.subscribe(frame); break
      case 'unsubscribe': this.unsubscribe(frame); break
      case 'publish': void this.publish(frame); break
      case 'ping': this.send(JSON.stringify({ type: 'pong', id: frame.id })); break
      case 'presence': void this.presence(frame); break
      case 'refresh': void this.refresh(frame); break
    }
  }

  private subscribe (frame: SubscribeFrame): void {
    const { channel, since, id } = frame
    if (!can(this.principal, 'subscribe', channel)) { this.fail(new Errors.FORBIDDEN('subscribe', channel), id, channel); return }
    const ns = this.ctx.namespaces.of(channel)
    if (ns === undefined) { this.fail(new Errors.UNKNOWN_NAMESPACE(channel), id, channel); return }
    if (this.subs.has(channel)) { this.fail(new Errors.ALREADY_SUBSCRIBED(channel), id, channel); return }
    if (this.subs.size >= this.ctx.config.maxSubscriptions) { this.fail(new Errors.TOO_MANY_SUBSCRIPTIONS(this.ctx.config.maxSubscriptions), id, channel); return }
    const state: SubState = { active: false, ns }
    this.subs.set(channel, state)
    this.ctx.hub.subscribe(this, channel, since).then(
      () => { if (id !== undefined) this.ack(id, { channel }) },
      (err: unknown) => {
        if (this.subs.get(channel) === state) this.subs.delete(channel)
        this.fail(err, id, channel)
      })
  }

  private unsubscribe (frame: UnsubscribeFrame): void {
    const { channel, id } = frame
    if (!this.subs.has(channel)) { this.fail(new Errors.NOT_SUBSCRIBED(channel), id, channel); return }
    this.subs.delete(channel)
    this.ctx.hub.unsubscribe(this, channel)
    this.outbox.discard(channel)
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

  /**
   * A new token for the same subject extends the connection past the old token's expiry. Permissions are
   * checked again: subscriptions the new token no longer allows are ended.
   */
  private async refresh (frame: RefreshFrame): Promise<void> {
    const { token, id } = frame
    try {
      const principal = await this.ctx.verifyToken(token)
      if (principal.sub !== this.principal.sub) throw new Errors.UNAUTHORIZED('a refresh token must have the same sub')
      this.principal = principal
      this.scheduleExpiry()
      for (const channel of [...this.subs.keys()]) {
        if (can(principal, 'subscribe', channel)) continue
        this.subs.delete(channel)
        this.ctx.hub.unsubscribe(this, channel)
        this.outbox.discard(channel)
        this.send(JSON.stringify({ type: 'unsubscribed', channel, reason: 'forbidden' }))
      }
      if (id !== undefined) this.ack(id, { exp: principal.exp })
    } catch (err) {
      this.fail(err, id)
    }
  }

  /** At the token's expiry, unless a refresh came first, the connection is closed with 4501. */
  private scheduleExpiry (): void {
    clearTimeout(this.expiry)
    const exp = this.principal.exp
    if (exp === undefined) return
    const ms = exp * 1000 - Date.now()
    if (ms > 0x7fffffff) return
    this.expiry = setTimeout(() => this.close(CloseCodes.TOKEN_EXPIRED, 'token expired: refresh it or reconnect with a new one'), Math.max(0, ms)).unref()
  }

  private rateLimited (): void {
    const now = Date.now()
    if (now - this.refusedWindow > 10_000) { this.refusedWindow = now; this.refused = 0 }
    if (++this.refused > this.ctx.config.limits.wsBurst) {
      this.ctx.metrics.errors.inc({ code: 'HERALD_ERR_RATE_LIMITED' })
      this.close(CloseCodes.POLICY_VIOLATION, 'sustained frame rate over the limit')
      return
    }
    this.fail(new Errors.RATE_LIMITED('1s'))
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
    if (this.closed) return
    this.flush()
    this.socket.send(text)
  }

  private onClose (code: number, reason: string): void {
    if (!this.closed) this.ctx.log.info({ client: this.id, sub: this.principal.sub, code, reason, ms: Date.now() - this.openedAt }, 'websocket closed')
    this.cleanup()
  }

  private cleanup (): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.expiry)
    this.outbox.clear()
    for (const channel of this.subs.keys()) this.ctx.hub.unsubscribe(this, channel)
    this.subs.clear()
    this.ctx.connections.delete(this)
  }
}

import { encodeCursor, type Position } from '../cursor.js'
import type { TimerHandle } from '../clock.js'
import { Heartbeat } from '../heartbeat.js'
import { parseFrame, type ClientFrame } from '../frames.js'
import type { Transport, TransportHost, WebSocketConstructor, WebSocketLike, CloseInfo } from './types.js'

const noop = (): void => {}

/**
 * JSON frames over one WebSocket. Opens when the server's `connected` frame arrives; the client then subscribes
 * and publishes with frames. Outgoing frames are paced by a token bucket (below the server's default WS_RATE /
 * WS_BURST), so flushing a full offline queue never trips the server's rate limit.
 */
export class WebSocketTransport implements Transport {
  readonly name = 'websocket' as const
  readonly bidirectional = true
  private socket: WebSocketLike | undefined
  private isOpen = false
  private done = false
  private connectTimer: TimerHandle | undefined
  private heartbeat: Heartbeat | undefined
  private readonly outgoing: string[] = []
  private tokens: number
  private refilledAt: number
  private pumpTimer: TimerHandle | undefined

  constructor (private readonly host: TransportHost, private readonly Ctor: WebSocketConstructor) {
    this.tokens = host.settings.sendRate.burst
    this.refilledAt = host.clock.now()
  }

  open (): void {
    const { host } = this
    // The server's own subscriptions (the token's `channels`) resume from where ours stand: a cursor of them.
    const server: Array<[string, Position]> = []
    for (const c of host.channels()) if (c.server === true && c.since !== undefined) server.push([c.channel, c.since])
    const url = host.base.replace(/^http/, 'ws') + '/v1/ws?token=' + encodeURIComponent(host.token()) +
      (server.length > 0 ? '&cursor=' + encodeURIComponent(encodeCursor(server)) : '')
    let socket: WebSocketLike
    try {
      socket = new this.Ctor(url)
    } catch (err) {
      host.clock.setTimeout(() => this.fail({ opened: false, reason: 'websocket: ' + (err instanceof Error ? err.message : String(err)) }), 0)
      return
    }
    this.socket = socket
    this.connectTimer = host.clock.setTimeout(() => this.fail({ opened: false, reason: 'connect timeout', timeout: true }), host.settings.connectTimeout)
    // The `ws` package throws on an 'error' event without a listener: keep one for the socket's whole life.
    socket.onerror = noop
    socket.onmessage = (event: { data?: unknown }) => this.onMessage(event.data)
    socket.onclose = (event: { code?: number, reason?: string }) => {
      const code = event.code ?? 1006
      this.fail({ opened: this.isOpen, code, reason: `closed ${code}${event.reason !== undefined && event.reason !== '' ? ' ' + event.reason : ''}` })
    }
  }

  send (frame: ClientFrame): void {
    if (this.done) return
    this.outgoing.push(JSON.stringify(frame))
    this.pump()
  }

  subscriptionsChanged (): void {}
  tokenChanged (): void {}

  close (): void {
    if (this.done) return
    this.done = true
    this.cleanup(true)
  }

  private onMessage (data: unknown): void {
    if (this.done) return
    this.heartbeat?.activity()
    const frame = parseFrame(data)
    if (frame === undefined) return
    if (!this.isOpen) {
      if (frame.type !== 'connected') return
      this.isOpen = true
      this.host.clock.clearTimeout(this.connectTimer)
      const { interval, timeout } = this.host.settings.heartbeat
      const serverMs = (frame.pingInterval > 0 ? frame.pingInterval : 25) * 1000
      this.heartbeat = new Heartbeat(this.host.clock, {
        interval: interval ?? serverMs,
        timeout: timeout ?? 2 * serverMs + Math.min(5000, serverMs),
        ping: () => this.send({ type: 'ping' }),
        dead: () => this.fail({ opened: true, reason: 'heartbeat timeout', timeout: true })
      })
      this.heartbeat.start()
      this.host.opened({ client: frame.client, sub: frame.sub, pingInterval: frame.pingInterval, channels: frame.channels ?? [] })
      return
    }
    this.host.frame(frame)
  }

  private pump (): void {
    if (this.done || !this.isOpen || this.socket === undefined) return
    const { clock, settings } = this.host
    const now = clock.now()
    this.tokens = Math.min(settings.sendRate.burst, this.tokens + (now - this.refilledAt) * settings.sendRate.rate / 1000)
    this.refilledAt = now
    while (this.outgoing.length > 0 && this.tokens >= 1) {
      this.tokens -= 1
      try {
        this.socket.send(this.outgoing.shift()!)
      } catch {
        // Not open any more: the close event follows.
        return
      }
    }
    if (this.outgoing.length > 0 && this.pumpTimer === undefined) {
      const wait = Math.ceil((1 - this.tokens) * 1000 / settings.sendRate.rate)
      this.pumpTimer = clock.setTimeout(() => { this.pumpTimer = undefined; this.pump() }, Math.max(1, wait))
    }
  }

  private fail (info: CloseInfo): void {
    if (this.done) return
    this.done = true
    this.cleanup(false)
    this.host.closed(info)
  }

  /** `graceful`: a close handshake (we are leaving); otherwise the socket is cut (it is dead or refused). */
  private cleanup (graceful: boolean): void {
    const { clock } = this.host
    clock.clearTimeout(this.connectTimer)
    if (this.pumpTimer !== undefined) clock.clearTimeout(this.pumpTimer)
    this.heartbeat?.stop()
    this.outgoing.length = 0
    const socket = this.socket
    if (socket === undefined) return
    socket.onmessage = null
    socket.onclose = null
    socket.onopen = null
    try {
      // `ws` offers terminate(), which does not wait for a close handshake a dead peer will never answer.
      const terminate = (socket as { terminate?: () => void }).terminate
      if (!graceful && typeof terminate === 'function') terminate.call(socket)
      else socket.close(1000)
    } catch {}
  }
}

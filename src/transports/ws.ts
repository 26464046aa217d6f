import type { WebSocket, RawData } from 'ws'
import type { Logger } from 'pino'
import type { Publication } from '../bus/broker.js'
import type { Session } from '../session/session.js'
import type { Commands } from '../session/commands.js'
import type { DeliveryCounts, Transport } from './transport.js'
import { CloseCodes } from '../protocol/codes.js'
import { flushAtTurnEnd, flushWithin, frameBytes, wireFrame } from './wire.js'

/** The parts of ws's WebSocket that the pre-framed write path relies on (ws 8). */
interface WsInternals { _socket: import('node:net').Socket | null, _sender: { _state: number } }
const SEND_TEXT = { binary: false }
/** An unmasked WebSocket ping with no payload: what `socket.ping()` writes (opcode 0x9, FIN). */
const PING_FRAME = Buffer.from([0x89, 0x00])
/** A peer that does not answer our close frame within this long is cut off. */
const CLOSE_GRACE_MS = 2000

/** A WebSocket connection: JSON text frames in (to its session's commands) and out. */
export class WsTransport implements Transport {
  /**
   * WS_WRITE_DELAY_MS for sockets made without one (`config.ws.writeDelayMs`; the WebSocket route passes it). With
   * 0, a socket's events are written at the end of the turn they arrive in; with more, they wait up to that many
   * ms to go out together: fewer writes for a socket with many events a second, at up to that much latency.
   */
  static defaultWriteDelayMs = 0
  readonly name = 'websocket'
  readonly bidirectional = true
  /** Heartbeat: set on every pong; a ping round that finds it false terminates the connection. */
  alive = true
  /** Which slice of the heartbeat interval pings this socket (see WsHeartbeat). */
  heartbeatSlice = 0
  /** The heartbeat this socket is in (left on close). */
  heartbeat?: WsHeartbeat = undefined
  /** A heartbeat ping waiting to go out with this socket's next event write (see WsHeartbeat). */
  private pingDue = false
  private session?: Session
  /** No WebSocket extension (permessage-deflate) on this socket: pre-built frames can be written as they are. */
  private readonly plain: boolean
  /** Pre-built event frames of this turn, not yet written (see flushAtTurnEnd). */
  private pending: Buffer | Buffer[] | undefined = undefined
  private pendingBytes = 0

  constructor (private readonly socket: WebSocket, private readonly delivered: DeliveryCounts, private readonly writeDelayMs = WsTransport.defaultWriteDelayMs) {
    this.plain = socket.extensions === ''
  }

  /**
   * Connects the socket to its session. No client input may take the node down: whatever handling one frame
   * throws ends at most this connection (close 1011), and is logged as the bug it is.
   */
  attach (session: Session, commands: Commands, log: Logger): void {
    this.session = session
    this.socket.on('message', (data: RawData, isBinary: boolean) => {
      try {
        const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer).byteLength
        commands.receive(() => data.toString(), size, isBinary)
      } catch (err) {
        log.error({ err, client: session.id }, 'websocket frame handling failed; closing the connection')
        session.close(CloseCodes.INTERNAL_ERROR, 'internal error')
      }
    })
    this.socket.on('pong', () => { this.alive = true })
    this.socket.on('close', (code, reason) => {
      this.heartbeat?.delete(this)
      session.gone(`peer closed (${code} ${reason.toString().slice(0, 64)})`)
    })
  }

  buffered (): number { return this.socket.bufferedAmount + this.pendingBytes }

  send (text: string): void {
    this.flush()
    this.socket.send(text)
  }

  subscribed (text: string): void { this.send(text) }

  /**
   * Serialise once, frame once: with no extension negotiated (no compression) and ws's sender idle, the
   * publication's shared, pre-built WebSocket frame goes straight to the TCP socket — exactly the bytes
   * `socket.send` would write, without a header, an options object and two writes per subscriber — at the end
   * of this turn, together with any other event frames this socket gets in it (wire.ts's flushAtTurnEnd).
   */
  event (pub: Publication): void {
    this.delivered.websocket++
    const internals = this.socket as unknown as WsInternals
    const raw = internals._socket
    if (this.plain && internals._sender._state === 0 && this.socket.readyState === 1 && raw !== null && raw.writable) {
      const wire = wireFrame(pub)
      const pending = this.pending
      if (pending === undefined) {
        this.pending = wire
        if (this.writeDelayMs > 0) flushWithin(this, this.writeDelayMs)
        else flushAtTurnEnd(this)
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
    let parts = pending
    let total = bytes
    if (this.pingDue) {
      // The waiting heartbeat ping rides in the same write: a control frame after whole frames.
      this.pingDue = false
      parts = Array.isArray(pending) ? [...pending, PING_FRAME] : [pending, PING_FRAME]
      total += PING_FRAME.length
    }
    raw.write(Array.isArray(parts) ? Buffer.concat(parts, total) : parts)
  }

  close (code: number, reason: string): void {
    this.flush()
    this.socket.close(code, reason)
    setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS).unref()
  }

  /** Pings now, with ws's own ping frame; a ping that was waiting to ride with an event write is this one. */
  ping (): void {
    this.pingDue = false
    this.socket.ping()
  }

  /**
   * Asks for a heartbeat ping to go out with this socket's next event write (no write of its own); the heartbeat
   * sends it on its own (`pingIfStillDue`) if no event came within its ride window.
   */
  pingWithNextWrite (): void { this.pingDue = true }

  pingIfStillDue (): void { if (this.pingDue && this.socket.readyState === 1) this.ping() }

  /** Cuts the connection without a close handshake (a dead peer). */
  terminate (reason: string): void {
    this.socket.terminate()
    this.session?.gone(reason)
  }
}

/**
 * One liveness loop for every socket (the `ws` README's isAlive pattern): a socket that did not answer the
 * previous ping is terminated; the others are pinged again. The round is spread over the interval in slices, so no
 * tick writes to more than a small share of the sockets (a burst of writes in one tick is a latency spike for
 * all): a tick every 250 ms at most (10,000 sockets and the default 25 s: 100 pings a tick, not 10,000 at once).
 *
 * Each socket is in one slice's set, so a tick visits only the sockets it pings (at 10,000 sockets, 100 a tick rather
 * than a walk over all 10,000 four times a second).
 *
 * A ping first waits a few ticks (at most a tenth of the interval, one second at the default) for the socket's next
 * event write and goes out in it: a socket that gets events pays no write of its own for its heartbeat (at 10,000
 * sockets and 25 s, 400 writes a second fewer). One that gets none is pinged alone when its wait is over, and still
 * has nine tenths of the interval to answer.
 */
export class WsHeartbeat {
  /** The sockets of each slice; a new socket joins the slices in turn. */
  private readonly bySlice: Array<Set<WsTransport>>
  private readonly slices: number
  private slice = 0
  private nextSlice = 0
  private readonly timer: NodeJS.Timeout
  /** Pings waiting for an event write, by the tick they were asked in: a ring of one list per tick of the wait. */
  private readonly riding: WsTransport[][]
  private ticks = 0

  constructor (intervalSeconds: number, private readonly onTimeout: () => void) {
    this.slices = Math.max(10, Math.ceil(intervalSeconds * 4))
    this.bySlice = Array.from({ length: this.slices }, () => new Set())
    this.riding = Array.from({ length: Math.min(4, Math.floor(this.slices / 10)) }, () => [])
    this.timer = setInterval(() => this.tick(), intervalSeconds * 1000 / this.slices).unref()
  }

  add (t: WsTransport): void {
    t.heartbeatSlice = this.nextSlice
    this.nextSlice = (this.nextSlice + 1) % this.slices
    t.heartbeat = this
    this.bySlice[t.heartbeatSlice].add(t)
  }

  delete (t: WsTransport): void { this.bySlice[t.heartbeatSlice].delete(t) }

  stop (): void { clearInterval(this.timer) }

  private tick (): void {
    this.slice = (this.slice + 1) % this.slices
    // The pings asked `riding.length` ticks ago that no event write took along go now, alone.
    const ride = this.riding.length === 0 ? undefined : this.riding[this.ticks++ % this.riding.length]
    if (ride !== undefined) {
      for (let i = 0; i < ride.length; i++) ride[i].pingIfStillDue()
      ride.length = 0
    }
    for (const t of this.bySlice[this.slice]) {
      if (!t.alive) {
        this.onTimeout()
        t.terminate('heartbeat timeout')
        continue
      }
      t.alive = false
      if (ride === undefined) t.ping()
      else {
        t.pingWithNextWrite()
        ride.push(t)
      }
    }
  }
}

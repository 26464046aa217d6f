import type { ServerResponse } from 'node:http'
import type { Publication } from '../bus/broker.js'
import type { Session } from '../session/session.js'
import type { DeliveryCounts, Transport } from './transport.js'
import { frame } from '../protocol/frames.js'
import { flushAtTurnEnd, sseData, sseOne, sseOneChunk } from './wire.js'

/** A client that does not take the last message and the end of the stream within this long is cut off. */
const END_GRACE_MS = 2000

/**
 * One Server-Sent Events stream. Each message's `data:` is a server frame (the same JSON as on the WebSocket);
 * every `subscribed` and `event` message carries an `id:` holding the cursor of all the stream's channels, so a
 * reconnect with `Last-Event-ID` resumes every channel exactly after the last message received — on any node.
 * Commands do not come this way: the channels are the request's, publishing goes over REST.
 */
export class SseTransport implements Transport {
  readonly name = 'sse'
  readonly bidirectional = false
  private session?: Session
  private heartbeat?: NodeJS.Timeout
  private ended = false
  /** Set by every write: the heartbeat comments only a stream that stayed quiet for half its period (see `open`). */
  private wrote = false
  /** Messages written before the stream opened (while its subscriptions are set up), and their bytes. */
  private early: string[] | undefined = ['retry: 1000\n']
  private earlyBytes = 0

  /**
   * Event messages of this turn, not yet written: per event its `id:` line (the stream's own) and the shared
   * `data:` bytes of the publication (wire.ts), gathered into one HTTP chunk and one write at the turn's end.
   */
  private pending: Array<string | Buffer> = []
  private pendingBytes = 0
  /** The turn's first event, when it was a one-channel stream's shared message (its chunk can go out as it is). */
  private firstPub?: Publication

  constructor (private readonly res: ServerResponse, private readonly delivered: DeliveryCounts) {}

  private headers: Record<string, string | number | string[] | undefined> = {}
  private heartbeatSeconds = 15

  /** Ties the stream's end to its session; `headers` (CORS) go out with the head. Messages wait until `open`. */
  attach (session: Session, headers: Record<string, string | number | string[] | undefined>, heartbeatSeconds: number): void {
    this.session = session
    this.headers = headers
    this.heartbeatSeconds = heartbeatSeconds
    this.res.on('close', () => {
      this.stop()
      session.gone('client closed the stream')
    })
  }

  /**
   * Starts the stream: the head, what waited, then heartbeat comments. The heartbeat looks every half SSE_HEARTBEAT
   * and writes `: hb` only when nothing went out since it last looked, so a stream is never silent for longer than
   * SSE_HEARTBEAT, and one that carries events pays no write for its heartbeat.
   */
  open (): void {
    if (this.ended || this.early === undefined) return
    this.res.writeHead(200, {
      ...this.headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no'
    })
    this.res.socket?.setNoDelay(true)
    const early = this.early.join('')
    this.early = undefined
    this.earlyBytes = 0
    this.res.write(early)
    this.wrote = true
    this.heartbeat = setInterval(() => {
      if (this.wrote) this.wrote = false
      else this.write(': hb\n\n')
    }, this.heartbeatSeconds * 500).unref()
  }

  /**
   * Answers the request with an HTTP error instead of a stream (its session already gone): a stock EventSource
   * gives up on an error status, where it would reconnect forever to a stream that ends.
   */
  refuse (status: number, body: string): void {
    if (this.ended || this.early === undefined) return
    this.stop()
    this.early = undefined
    this.res.writeHead(status, { ...this.headers, 'content-type': 'application/json; charset=utf-8' })
    this.res.end(body)
  }

  buffered (): number { return this.res.writableLength + this.earlyBytes + this.pendingBytes }

  send (text: string): void { this.write('data: ' + text + '\n\n') }

  subscribed (text: string): void { this.write('id: ' + this.session!.cursor.encode() + '\ndata: ' + text + '\n\n') }

  /**
   * Serialise once, encode once: the event's `id:` line is this stream's cursor (ASCII), its `data:` part the
   * publication's bytes shared by every stream, and the events of one turn go out as one chunk in one write
   * (`flush`). A stream that is not open yet, or not a plain chunked HTTP/1.1 response, takes the general path.
   */
  event (pub: Publication): void {
    this.delivered.sse++
    const cursor = this.session!.cursor
    if (this.ended || this.early !== undefined || this.res.chunkedEncoding !== true) { this.write('id: ' + cursor.encode() + '\ndata: ' + pub.frame + '\n\n'); return }
    const first = this.pending.length === 0
    if (first) flushAtTurnEnd(this)
    if (cursor.size === 1) {
      // One channel: this id is every such stream's id for this publication, so the message is shared too.
      const message = pub.sseOne ?? sseOne(pub, cursor.encode())
      if (first) this.firstPub = pub
      this.pending.push(message)
      this.pendingBytes += message.length
      return
    }
    const id = 'id: ' + cursor.encode() + '\n'
    const data = sseData(pub)
    this.pending.push(id, data)
    this.pendingBytes += id.length + data.length
  }

  /**
   * Writes this turn's event messages as one HTTP/1.1 chunk (size line, messages, CRLF) straight to the socket —
   * the bytes `res.write` would send, without its per-call chunk framing, cork and string encoding — when nothing
   * of the response is buffered above the socket (so nothing can overtake it); through `res.write` otherwise.
   * Always before any other message, so the order is kept.
   */
  flush (): void {
    const pending = this.pending
    if (pending.length === 0) return
    const bytes = this.pendingBytes
    const firstPub = this.firstPub
    this.pending = []
    this.pendingBytes = 0
    this.firstPub = undefined
    if (this.ended) return
    this.wrote = true
    const socket = this.res.socket
    const direct = socket !== null && socket.writable && this.res.headersSent && this.res.writableLength === socket.writableLength
    // The turn's one event, a shared one-channel message: its shared chunk, as it is.
    if (direct && pending.length === 1 && firstPub !== undefined) { socket.write(sseOneChunk(firstPub)); return }
    const head = bytes.toString(16) + '\r\n'
    const out = Buffer.allocUnsafe((direct ? head.length + 2 : 0) + bytes)
    let at = direct ? out.write(head, 0, 'latin1') : 0
    for (let i = 0; i < pending.length; i++) {
      const part = pending[i]
      // `id:` lines are ASCII (protocol/cursor-codec.ts): one byte per character.
      at += typeof part === 'string' ? out.write(part, at, 'latin1') : part.copy(out, at)
    }
    if (direct) { out[at] = 13; out[at + 1] = 10; socket.write(out) } else this.res.write(out)
  }

  /** The `disconnect` message (with the code and whether to reconnect), then the end of the stream. */
  close (code: number, reason: string): void {
    this.flush()
    this.open()
    this.send(frame.disconnect(code, reason))
    this.stop()
    this.res.end()
    setTimeout(() => this.res.destroy(), END_GRACE_MS).unref()
  }

  private write (text: string): void {
    if (this.ended) return
    this.flush()
    if (this.early !== undefined) { this.early.push(text); this.earlyBytes += text.length; return }
    this.wrote = true
    this.res.write(text)
  }

  private stop (): void {
    this.ended = true
    clearInterval(this.heartbeat)
  }
}

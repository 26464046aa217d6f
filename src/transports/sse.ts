import type { ServerResponse } from 'node:http'
import type { Publication } from '../bus/broker.js'
import type { Session } from '../session/session.js'
import type { DeliveryCounts, Transport } from './transport.js'
import { frame } from '../protocol/frames.js'

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
  /** Messages written before the stream opened (while its subscriptions are set up), and their bytes. */
  private early: string[] | undefined = ['retry: 1000\n']
  private earlyBytes = 0

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

  /** Starts the stream: the head, what waited, then heartbeat comments every SSE_HEARTBEAT seconds. */
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
    this.heartbeat = setInterval(() => this.write(': hb\n\n'), this.heartbeatSeconds * 1000).unref()
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

  buffered (): number { return this.res.writableLength + this.earlyBytes }

  send (text: string): void { this.write('data: ' + text + '\n\n') }

  subscribed (text: string): void { this.write('id: ' + this.session!.cursor.encode() + '\ndata: ' + text + '\n\n') }

  event (pub: Publication): void {
    this.delivered.sse++
    this.write('id: ' + this.session!.cursor.encode() + '\ndata: ' + pub.frame + '\n\n')
  }

  /** The `disconnect` message (with the code and whether to reconnect), then the end of the stream. */
  close (code: number, reason: string): void {
    this.open()
    this.send(frame.disconnect(code, reason))
    this.stop()
    this.res.end()
    setTimeout(() => this.res.destroy(), END_GRACE_MS).unref()
  }

  private write (text: string): void {
    if (this.ended) return
    if (this.early !== undefined) { this.early.push(text); this.earlyBytes += text.length; return }
    this.res.write(text)
  }

  private stop (): void {
    this.ended = true
    clearInterval(this.heartbeat)
  }
}

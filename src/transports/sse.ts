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
  /** The reconnect delay hint, sent with the first message (one write for both). */
  private prelude = 'retry: 1000\n'

  constructor (private readonly res: ServerResponse, private readonly delivered: DeliveryCounts) {}

  /** Starts the stream (the headers, the `retry:` hint) and its heartbeat comments; ties its end to the session. */
  attach (session: Session, headers: Record<string, string | number | string[] | undefined>, heartbeatSeconds: number): void {
    this.session = session
    this.res.writeHead(200, {
      ...headers,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no'
    })
    this.res.socket?.setNoDelay(true)
    this.heartbeat = setInterval(() => this.write(': hb\n\n'), heartbeatSeconds * 1000).unref()
    this.res.on('close', () => {
      this.stop()
      session.gone('client closed the stream')
    })
  }

  buffered (): number { return this.res.writableLength }

  send (text: string): void { this.write('data: ' + text + '\n\n') }

  subscribed (text: string): void { this.write('id: ' + this.session!.cursor.encode() + '\ndata: ' + text + '\n\n') }

  event (pub: Publication): void {
    this.delivered.sse++
    this.write('id: ' + this.session!.cursor.encode() + '\ndata: ' + pub.frame + '\n\n')
  }

  /** The `disconnect` message (with the code and whether to reconnect), then the end of the stream. */
  close (code: number, reason: string): void {
    this.send(frame.disconnect(code, reason))
    this.stop()
    this.res.end()
    setTimeout(() => this.res.destroy(), END_GRACE_MS).unref()
  }

  private write (text: string): void {
    if (this.ended) return
    if (this.prelude !== '') { text = this.prelude + text; this.prelude = '' }
    this.res.write(text)
  }

  private stop (): void {
    this.ended = true
    clearInterval(this.heartbeat)
  }
}

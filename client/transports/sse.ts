import type { TimerHandle } from '../clock.js'
import { encodeCursor } from '../cursor.js'
import { parseFrame, type DisconnectFrame } from '../frames.js'
import { Heartbeat } from '../heartbeat.js'
import { SseParser } from '../sse-parser.js'
import { type CloseInfo, type OpenInfo, type Transport, type TransportHost, describe, errorOf, streamQuery } from './types.js'

/**
 * Server-Sent Events read with `fetch` streaming (browsers and Node alike — no EventSource needed): the token goes
 * in an Authorization header rather than the URL, HTTP refusals are seen with their status and error code, and
 * the resume position is the client's own cursor. Publishing goes over REST (done by the client).
 *
 * A stream carries a fixed set of channels, so every change of the subscriptions (and every new token) reopens it
 * with a cursor of the current positions: nothing is missed or repeated across the reopen.
 */
export class SseTransport implements Transport {
  readonly name = 'sse' as const
  readonly bidirectional = false
  private generation = 0
  private controller: AbortController | undefined
  private connectTimer: TimerHandle | undefined
  private heartbeat: Heartbeat | undefined
  private everOpened = false
  private started = false
  private done = false
  private restartScheduled = false

  constructor (private readonly host: TransportHost) {}

  open (): void {
    this.started = true
    void this.start()
  }

  subscriptionsChanged (): void { this.scheduleRestart() }
  tokenChanged (): void { this.scheduleRestart() }

  close (): void {
    if (this.done) return
    this.done = true
    this.generation++
    this.stopStream()
  }

  private scheduleRestart (): void {
    if (!this.started || this.done || this.restartScheduled) return
    this.restartScheduled = true
    // Coalesce the changes made in one turn (e.g. five subscribe() calls) into one reopen.
    queueMicrotask(() => {
      this.restartScheduled = false
      if (!this.done) void this.start()
    })
  }

  private stopStream (): void {
    this.controller?.abort()
    this.controller = undefined
    this.host.clock.clearTimeout(this.connectTimer)
    this.connectTimer = undefined
    this.heartbeat?.stop()
    this.heartbeat = undefined
  }

  private async start (): Promise<void> {
    const gen = ++this.generation
    const stale = (): boolean => gen !== this.generation || this.done
    this.stopStream()
    const { host } = this
    const channels = host.channels()
    if (channels.length === 0 && !host.serverChannels()) {
      // Nothing to stream (SSE needs at least one channel): check that the server is there and takes the token.
      if (this.everOpened) return
      const probe = await host.probe()
      if (stale()) return
      if (probe.network) { this.fail({ opened: false, reason: 'unreachable: ' + probe.message }); return }
      if (probe.status === 401 || probe.status === 403 || probe.status === 429 || probe.status >= 500) {
        this.fail({ opened: false, status: probe.status, errorCode: probe.errorCode, message: probe.message, reason: `HTTP ${probe.status} ${probe.errorCode ?? ''}`.trim() })
        return
      }
      this.markOpen({})
      return
    }

    const controller = new AbortController()
    this.controller = controller
    this.connectTimer = host.clock.setTimeout(() => {
      if (stale()) return
      this.fail({ opened: this.everOpened, reason: 'connect timeout', timeout: true })
    }, host.settings.connectTimeout)
    let res: Response
    try {
      res = await host.fetch(`${host.base}/v1/sse?${streamQuery(channels, encodeCursor).toString()}`, {
        headers: { authorization: 'Bearer ' + host.token(), accept: 'text/event-stream' },
        signal: controller.signal
      })
    } catch (err) {
      if (!stale()) this.fail({ opened: this.everOpened, reason: 'sse: ' + describe(err) })
      return
    }
    if (stale()) { controller.abort(); return }
    if (res.status !== 200) {
      const body = await errorOf(res)
      if (stale()) return
      const info: CloseInfo = { opened: this.everOpened, status: res.status, ...body, reason: `HTTP ${res.status} ${body.errorCode ?? ''}`.trim() }
      // One refused channel (forbidden, unknown namespace …) refuses the whole stream: drop it and reopen.
      if (host.channelRefused(info)) return
      this.fail(info)
      return
    }
    const reader = res.body?.getReader()
    if (reader === undefined) { this.fail({ opened: this.everOpened, reason: 'sse: no response body' }); return }
    const decoder = new TextDecoder()
    const parser = new SseParser()
    let disconnect: DisconnectFrame | undefined
    let sawError = false
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (stale()) return
        if (done) break
        this.heartbeat?.activity()
        for (const message of parser.push(decoder.decode(value, { stream: true }))) {
          if (stale()) return
          const frame = parseFrame(message.data)
          if (frame === undefined) continue
          if (frame.type === 'connected') {
            host.clock.clearTimeout(this.connectTimer)
            this.startHeartbeat(frame.pingInterval)
            if (!this.everOpened) this.markOpen({ client: frame.client, sub: frame.sub, pingInterval: frame.pingInterval, channels: frame.channels ?? [] })
          } else if (frame.type === 'disconnect') {
            disconnect = frame
          } else {
            if (frame.type === 'error') sawError = true
            host.frame(frame)
          }
        }
      }
    } catch (err) {
      if (!stale()) this.fail({ opened: this.everOpened, reason: 'sse: ' + describe(err) })
      return
    }
    if (stale()) return
    if (disconnect !== undefined && !sawError) {
      this.fail({ opened: true, code: disconnect.code, reason: `disconnect ${disconnect.code} ${disconnect.reason}` })
    } else {
      // Ended without a word, or after a subscribe error the client kept (transient): back off and resume.
      this.fail({ opened: this.everOpened, reason: disconnect !== undefined ? `disconnect ${disconnect.code} ${disconnect.reason}` : 'stream ended' })
    }
  }

  private startHeartbeat (pingInterval: number): void {
    this.heartbeat?.stop()
    const serverMs = (pingInterval > 0 ? pingInterval : 15) * 1000
    const { timeout } = this.host.settings.heartbeat
    // The server writes a `: hb` comment every pingInterval seconds; silence for twice that means a dead stream.
    this.heartbeat = new Heartbeat(this.host.clock, {
      interval: serverMs,
      timeout: timeout ?? 2 * serverMs + Math.min(5000, serverMs),
      dead: () => { if (!this.done) this.fail({ opened: true, reason: 'heartbeat timeout', timeout: true }) }
    })
    this.heartbeat.start()
  }

  private markOpen (info: OpenInfo): void {
    this.everOpened = true
    this.host.opened(info)
  }

  private fail (info: CloseInfo): void {
    if (this.done) return
    this.done = true
    this.generation++
    this.stopStream()
    this.host.closed(info)
  }
}

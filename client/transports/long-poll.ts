import { decodeCursor, encodeCursor } from '../cursor.js'
import type { PollAnswer } from '../frames.js'
import { type CloseInfo, type Transport, type TransportHost, describe, errorOf, streamQuery } from './types.js'

/**
 * HTTP long-poll: `GET /v1/poll` in a loop, each request carrying a cursor of the client's current positions, so a
 * lost answer is simply asked for again. After a change of subscriptions the next poll answers at once
 * (`timeout=0`) so that new subscriptions are confirmed quickly; later polls wait up to `pollTimeout` seconds.
 * Publishing goes over REST (done by the client). Long-poll clients are not presence members.
 */
export class LongPollTransport implements Transport {
  readonly name = 'long-poll' as const
  readonly bidirectional = false
  private generation = 0
  private controller: AbortController | undefined
  private everOpened = false
  private started = false
  private done = false
  private restartScheduled = false

  constructor (private readonly host: TransportHost) {}

  open (): void {
    this.started = true
    void this.loop()
  }

  subscriptionsChanged (): void {
    if (!this.started || this.done || this.restartScheduled) return
    this.restartScheduled = true
    queueMicrotask(() => {
      this.restartScheduled = false
      if (!this.done) void this.loop()
    })
  }

  /** The next request carries the new token. */
  tokenChanged (): void {}

  close (): void {
    if (this.done) return
    this.done = true
    this.generation++
    this.controller?.abort()
  }

  private async loop (): Promise<void> {
    const gen = ++this.generation
    const stale = (): boolean => gen !== this.generation || this.done
    this.controller?.abort()
    const { host } = this
    let wait = 0
    while (!stale()) {
      const channels = host.channels()
      if (channels.length === 0 && !host.serverChannels()) {
        if (this.everOpened) return
        const probe = await host.probe()
        if (stale()) return
        if (probe.network) { this.fail({ opened: false, reason: 'unreachable: ' + probe.message }); return }
        if (probe.status === 401 || probe.status === 429 || probe.status >= 500) {
          this.fail({ opened: false, status: probe.status, errorCode: probe.errorCode, message: probe.message, reason: `HTTP ${probe.status} ${probe.errorCode ?? ''}`.trim() })
          return
        }
        this.markOpen()
        return
      }
      const qs = streamQuery(channels, encodeCursor)
      qs.set('timeout', String(wait))
      const controller = new AbortController()
      this.controller = controller
      let timedOut = false
      const timer = host.clock.setTimeout(() => { timedOut = true; controller.abort() }, wait * 1000 + host.settings.connectTimeout)
      let answer: PollAnswer
      try {
        const res = await host.fetch(`${host.base}/v1/poll?${qs.toString()}`, { headers: { authorization: 'Bearer ' + host.token() }, signal: controller.signal })
        if (res.status !== 200) {
          const body = await errorOf(res)
          host.clock.clearTimeout(timer)
          if (stale()) return
          const info: CloseInfo = { opened: this.everOpened, status: res.status, ...body, reason: `HTTP ${res.status} ${body.errorCode ?? ''}`.trim() }
          if (host.channelRefused(info)) return
          this.fail(info)
          return
        }
        answer = await res.json() as PollAnswer
      } catch (err) {
        host.clock.clearTimeout(timer)
        if (!stale()) this.fail({ opened: this.everOpened, reason: timedOut ? 'poll timeout' : 'long-poll: ' + describe(err), timeout: timedOut })
        return
      }
      host.clock.clearTimeout(timer)
      if (stale()) return
      if (!this.everOpened) this.markOpen()
      if (stale()) return
      host.pollAnswer(answer, channels.map((c) => c.channel))
      // Ended for good by the server (disconnected through the server API, a revoked token): like a WebSocket close code.
      if (answer.disconnect !== undefined) {
        this.fail({ opened: true, code: answer.disconnect.code, reason: `disconnect ${answer.disconnect.code} ${answer.disconnect.reason}` })
        return
      }
      // Channels the server did not position (an older server answered a zero-timeout poll before its subscribe
      // was set up): ask again soon rather than after a full wait.
      const positioned = decodeCursor(answer.cursor, channels.map((c) => c.channel))
      wait = channels.every((c) => positioned?.has(c.channel) === true) ? host.settings.pollTimeout : 1
    }
  }

  private markOpen (): void {
    this.everOpened = true
    this.host.opened({})
  }

  private fail (info: CloseInfo): void {
    if (this.done) return
    this.done = true
    this.generation++
    this.controller?.abort()
    this.host.closed(info)
  }
}

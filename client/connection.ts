import { tokenHasChannels } from './jwt.js'
import type { Backoff } from './backoff.js'
import type { Clock, TimerHandle } from './clock.js'
import { CloseCodes, closeAction } from './codes.js'
import type { Position } from './cursor.js'
import { ClientErrorCodes, HeraldError } from './errors.js'
import type { PollAnswer, ServerFrame } from './frames.js'
import { Reconnector, type RetryInfo } from './reconnect.js'
import type { Rest } from './rest.js'
import type { StateChange } from './state.js'
import type { Tokens } from './tokens.js'
import { LongPollTransport } from './transports/long-poll.js'
import { SseTransport } from './transports/sse.js'
import {
  type CloseInfo, type FetchLike, type OpenInfo, type StreamChannel, type Transport, type TransportHost, type TransportName,
  type TransportSettings, type WebSocketConstructor, describe
} from './transports/types.js'
import { WebSocketTransport } from './transports/websocket.js'

const MAX_AUTH_RETRIES = 3

/** The connection in use, as publishing, requests and subscriptions see it. */
export interface Link {
  readonly active: Transport | undefined
  /** Whether `active` has opened. */
  readonly open: boolean
}

/** What the connection tells the client. */
export interface ConnectionHost {
  channels: () => StreamChannel[]
  frame: (frame: ServerFrame) => void
  pollAnswer: (answer: PollAnswer, channels: string[]) => void
  channelRefused: (info: CloseInfo) => boolean
  /** A connection opened. */
  opened: (t: Transport, info: OpenInfo) => void
  /** An upgrade replaced the open connection with `t`. */
  replaced: (t: Transport, info: OpenInfo) => void
  /** The open connection (or the attempt) ended; a retry is being decided. */
  lost: () => void
  /** Stop for good. */
  terminate: (reason: string, error: HeraldError) => void
  error: (error: HeraldError) => void
  change: (change: StateChange) => void
  retry: (info: RetryInfo) => void
}

export interface ConnectionOptions {
  url: string
  clock: Clock
  fetch: FetchLike
  WebSocket: WebSocketConstructor | undefined
  /** Usable transports in order of preference. */
  transports: TransportName[]
  settings: TransportSettings
  backoff: Backoff
  stableAfter: number
  upgradeInterval: number
  tokens: Tokens
  rest: Rest
  host: ConnectionHost
}

/**
 * One logical connection: attempts over the preferred transport, what a failure means (retry, fall back to the next
 * transport, renew the token, or stop), and trials of the preferred transport again while on a fallback.
 */
export class Connection implements Link {
  readonly life: Reconnector
  private current: Transport | undefined
  private isOpen = false
  private lastTransport: TransportName | null = null
  private trial: Transport | undefined
  private trialLevel = 0
  /** Index in the transport list of the transport in use. */
  private level = 0
  private upgradeTimer: TimerHandle | undefined
  private authFailures = 0
  /**
   * Attempts of the current transport that failed while the server answered over plain HTTP. One is not enough to
   * call the transport blocked: the attempt may have failed while the server was down and the probe reached it just
   * after it came back (a restart). Two in a row are.
   */
  private blockedStrikes = 0
  private attemptGen = 0
  private readonly clock: Clock
  private readonly host: ConnectionHost

  constructor (private readonly options: ConnectionOptions) {
    this.clock = options.clock
    this.host = options.host
    this.life = new Reconnector({
      clock: this.clock,
      backoff: options.backoff,
      stableAfter: options.stableAfter,
      connect: () => { void this.attempt() },
      onChange: (change) => this.host.change(change),
      onRetry: (info) => this.host.retry(info)
    })
  }

  get active (): Transport | undefined { return this.current }

  get open (): boolean { return this.isOpen }

  /** The transport in use or being tried (null before the first attempt and after close). */
  get transport (): TransportName | null { return this.current?.name ?? (this.life.state === 'closed' ? null : this.lastTransport) }

  /** Ends the connection and any trial; no attempt follows. */
  close (): void {
    this.attemptGen++
    this.clearUpgrade()
    this.trial?.close()
    this.trial = undefined
    this.current?.close()
    this.current = undefined
    this.isOpen = false
  }

  private async attempt (): Promise<void> {
    const gen = ++this.attemptGen
    if (this.current !== undefined) { this.current.close(); this.current = undefined; this.isOpen = false }
    try {
      await this.options.tokens.ensure()
    } catch (err) {
      if (gen !== this.attemptGen || this.life.state === 'closed') return
      const error = err instanceof HeraldError ? err : new HeraldError(ClientErrorCodes.TOKEN, 'getToken failed: ' + describe(err))
      this.host.error(error)
      this.life.lost(error.message, 'backoff')
      return
    }
    if (gen !== this.attemptGen || this.life.state === 'closed') return
    const transport = this.createTransport(this.options.transports[this.level])
    this.current = transport
    this.lastTransport = transport.name
    transport.open()
  }

  private createTransport (name: TransportName): Transport {
    // `t` is assigned below, before any callback can run (they are all asynchronous).
    // eslint-disable-next-line prefer-const
    let t: Transport
    const { host, tokens, rest } = this.options
    const transportHost: TransportHost = {
      base: this.options.url,
      clock: this.clock,
      fetch: this.options.fetch,
      settings: this.options.settings,
      token: () => tokens.current ?? '',
      channels: () => host.channels(),
      serverChannels: () => tokens.current !== undefined && tokenHasChannels(tokens.current),
      opened: (info) => this.onOpened(t, info),
      frame: (frame) => { if (t === this.current) host.frame(frame) },
      pollAnswer: (answer, channels) => { if (t === this.current) host.pollAnswer(answer, channels) },
      closed: (info) => this.onClosed(t, info),
      channelRefused: (info) => t === this.current && host.channelRefused(info),
      probe: async () => await rest.probe()
    }
    t = name === 'websocket'
      ? new WebSocketTransport(transportHost, this.options.WebSocket!)
      : name === 'sse' ? new SseTransport(transportHost) : new LongPollTransport(transportHost)
    return t
  }

  private onOpened (t: Transport, info: OpenInfo): void {
    if (t === this.trial) { this.promote(t, info); return }
    if (t !== this.current || this.life.state === 'closed') return
    this.isOpen = true
    this.authFailures = 0
    this.blockedStrikes = 0
    this.life.connected(`open (${t.name})`)
    this.host.opened(t, info)
  }

  private onClosed (t: Transport, info: CloseInfo): void {
    if (t === this.trial) { this.trial = undefined; this.upgradeFailed(); return }
    if (t !== this.current || this.life.state === 'closed') return
    this.current = undefined
    this.isOpen = false
    this.clearUpgrade()
    if (this.trial !== undefined) { this.trial.close(); this.trial = undefined }
    this.host.lost()
    void this.decide(t.name, info)
  }

  /** Decides what a failed attempt or a lost connection means: retry (when, how), fall back, or stop. */
  private async decide (name: TransportName, info: CloseInfo): Promise<void> {
    const reason = `${name}: ${info.reason}`
    // Refused token.
    if (info.status === 401 || info.code === CloseCodes.TOKEN_EXPIRED) { this.authRefused(reason, info); return }
    // The server closed an open connection with a code: its range says what to do.
    if (info.code !== undefined && info.opened) {
      const action = closeAction(info.code)
      if (action === 'terminal') { this.host.terminate(reason, new HeraldError(closeCodeName(info.code), reason)); return }
      this.life.lost(reason, action === 'reconnect-now' ? 'jitter' : 'backoff')
      return
    }
    // An HTTP refusal of an SSE stream or a poll.
    if (info.status !== undefined) {
      if (info.status === 403 && info.errorCode === 'HERALD_ERR_ORIGIN_NOT_ALLOWED') { this.fallback(reason); return }
      if (info.status === 403) { this.host.terminate(reason, new HeraldError(info.errorCode ?? 'HERALD_ERR_FORBIDDEN', info.message ?? reason, { status: 403 })); return }
      this.life.lost(reason, 'backoff')
      return
    }
    // Lost after it worked (network drop, heartbeat timeout): back off, resume on the same transport.
    if (info.opened) { this.life.lost(reason, 'backoff'); return }
    // Never opened and no HTTP status (a browser shows a refused WebSocket only as a failed one): ask the server
    // over plain HTTP whether it is there and takes the token.
    const gen = this.attemptGen
    const probe = await this.options.rest.probe()
    if (gen !== this.attemptGen || this.life.state === 'closed' || this.current !== undefined) return
    if (probe.network) { this.life.lost(`${reason}; server unreachable (${probe.message})`, 'backoff'); return }
    if (probe.status === 401) { this.authRefused(`${reason}; HTTP 401 ${probe.errorCode ?? ''}`.trim(), { ...info, status: 401, errorCode: probe.errorCode, message: probe.message }); return }
    if (probe.status === 429 || probe.status >= 500) { this.life.lost(`${reason}; HTTP ${probe.status}`, 'backoff'); return }
    // The server answers and accepts the token, yet this transport does not get through (a proxy without
    // WebSocket support, a buffering proxy, a blocked path …): once more at once (see blockedStrikes), then the next one.
    if (++this.blockedStrikes < 2) { void this.attempt(); return }
    this.fallback(reason)
  }

  private fallback (reason: string): void {
    this.blockedStrikes = 0
    if (this.level + 1 < this.options.transports.length) {
      this.level++
      // Same state (connecting / reconnecting): the next transport is tried at once.
      void this.attempt()
      return
    }
    this.level = 0
    this.life.lost(`${reason}; no transport got through`, 'backoff')
  }

  private authRefused (reason: string, info: CloseInfo): void {
    const expired = info.code === CloseCodes.TOKEN_EXPIRED || info.errorCode === 'HERALD_ERR_TOKEN_EXPIRED'
    const code = expired ? 'HERALD_ERR_TOKEN_EXPIRED' : (info.errorCode ?? 'HERALD_ERR_UNAUTHORIZED')
    const error = new HeraldError(code, info.message ?? reason, { status: 401 })
    // A bad token (not an expired one) is not retried; nor is an expired one without getToken.
    if (!expired || !this.options.tokens.renewable) { this.host.terminate(reason, error); return }
    this.authFailures++
    if (this.authFailures > MAX_AUTH_RETRIES) { this.host.terminate(`${reason}; fresh tokens were refused too`, error); return }
    this.options.tokens.current = undefined
    this.life.lost('token expired', this.authFailures === 1 ? 'now' : 'backoff')
  }

  // ------------------------------------------------------------------ upgrading back to the preferred transport

  /** While on a fallback transport, schedules a trial of the preferred ones. */
  scheduleUpgrade (): void {
    this.clearUpgrade()
    if (this.options.upgradeInterval <= 0 || this.level === 0 || this.trial !== undefined) return
    this.upgradeTimer = this.clock.setTimeout(() => { this.upgradeTimer = undefined; this.tryUpgrade(0) }, this.options.upgradeInterval)
  }

  private clearUpgrade (): void {
    this.clock.clearTimeout(this.upgradeTimer)
    this.upgradeTimer = undefined
  }

  private tryUpgrade (from: number): void {
    if (!this.isOpen || this.trial !== undefined || this.life.state !== 'connected') return
    for (let i = from; i < this.level; i++) {
      const name = this.options.transports[i]
      // An SSE stream without channels proves nothing: only try it with subscriptions to stream.
      if (name === 'sse' && this.options.host.channels().length === 0 && !(this.options.tokens.current !== undefined && tokenHasChannels(this.options.tokens.current))) continue
      this.trialLevel = i
      this.trial = this.createTransport(name)
      this.trial.open()
      return
    }
    this.scheduleUpgrade()
  }

  private upgradeFailed (): void {
    if (this.trialLevel + 1 < this.level) this.tryUpgrade(this.trialLevel + 1)
    else this.scheduleUpgrade()
  }

  /** The trial connection opened: it replaces the current one, which is closed; subscriptions resume from their positions. */
  private promote (t: Transport, info: OpenInfo): void {
    if (this.life.state !== 'connected') { t.close(); this.trial = undefined; return }
    const old = this.current
    this.trial = undefined
    old?.close()
    this.current = t
    this.isOpen = true
    this.level = this.trialLevel
    this.lastTransport = t.name
    this.host.replaced(t, info)
  }
}

function closeCodeName (code: number): string {
  if (code === CloseCodes.UNAUTHORIZED) return 'HERALD_ERR_UNAUTHORIZED'
  if (code === CloseCodes.FORBIDDEN) return 'HERALD_ERR_FORBIDDEN'
  if (code === CloseCodes.TOKEN_EXPIRED) return 'HERALD_ERR_TOKEN_EXPIRED'
  if (code === CloseCodes.TOKEN_REVOKED) return 'HERALD_ERR_TOKEN_REVOKED'
  return `HERALD_CLOSE_${code}`
}

import type { Metrics } from '../metrics.js'
import type { Publisher } from '../hub/publish.js'
import type { PresenceQuery } from '../presence/query.js'
import type { Principal } from '../auth/permissions.js'
import type { ClientFrame, PresenceFrame, PublishFrame, RefreshFrame, SubscribeFrame, UnsubscribeFrame } from '../protocol/client-frames.js'
import type { Session } from './session.js'
import { CloseCodes } from '../protocol/codes.js'
import { frame } from '../protocol/frames.js'
import { parseClientFrame } from '../protocol/parse.js'
import { Errors } from '../errors.js'
import { TokenBucket } from './admission.js'

export interface CommandServices {
  publisher: Publisher
  presence: PresenceQuery
  verifyToken: (token: string) => Promise<Principal>
  metrics: Metrics
  limits: { frameRate: number, frameBurst: number, maxFrameBytes: number, acceptBinary: boolean }
}

/** How long refused frames are counted before the count starts again. */
const REFUSED_WINDOW_MS = 10_000

/**
 * The client frames of a two-way connection (docs/protocol.md): admitted (rate, size, kind), parsed and carried
 * out on its session. Every frame with an `id` is answered by exactly one `ack` or `error` carrying that id.
 */
export class Commands {
  private readonly bucket: TokenBucket
  /** Frames refused by the rate limit in the current window. */
  private refused = 0
  private refusedSince = 0

  constructor (private readonly session: Session, private readonly services: CommandServices) {
    this.bucket = new TokenBucket(services.limits.frameRate, services.limits.frameBurst)
  }

  /** One frame as it came off the connection: `text()` decodes it only once it is admitted. */
  receive (text: () => string, size: number, binary: boolean): void {
    if (this.session.closed) return
    const { limits } = this.services
    if (!this.bucket.take()) { this.rateLimited(); return }
    if (size > limits.maxFrameBytes) { this.session.fail(new Errors.FRAME_TOO_LARGE(limits.maxFrameBytes)); return }
    if (binary && !limits.acceptBinary) { this.session.fail(new Errors.BAD_FRAME('binary', 'frames are JSON text (or set WS_ACCEPT_BINARY)')); return }
    const parsed = parseClientFrame(text())
    if (!parsed.ok) { this.session.fail(parsed.error, parsed.id, parsed.channel); return }
    this.dispatch(parsed.frame)
  }

  private dispatch (f: ClientFrame): void {
    switch (f.type) {
      case 'subscribe': this.subscribe(f); break
      case 'unsubscribe': this.unsubscribe(f); break
      case 'publish': void this.publish(f); break
      case 'ping': this.session.send(frame.pong(f.id)); break
      case 'presence': void this.presence(f); break
      case 'refresh': void this.refresh(f); break
    }
  }

  private subscribe ({ channel, since, id, delta }: SubscribeFrame): void {
    let subscribing
    try {
      subscribing = this.session.subscribe(channel, since, false, delta === true)
    } catch (err) {
      this.session.fail(err, id, channel)
      return
    }
    subscribing.then(
      () => { if (id !== undefined) this.session.send(frame.ack(id, { channel })) },
      (err: unknown) => this.session.fail(err, id, channel))
  }

  private unsubscribe ({ channel, id }: UnsubscribeFrame): void {
    if (!this.session.unsubscribe(channel, 'client')) { this.session.fail(new Errors.NOT_SUBSCRIBED(channel), id, channel); return }
    if (id !== undefined) this.session.send(frame.ack(id, { channel }))
  }

  private async publish ({ channel, data, event, id, version }: PublishFrame): Promise<void> {
    try {
      const result = await this.services.publisher.publish(this.session.principal, { channel, data, event, id, version }, 'websocket')
      if (id !== undefined) this.session.send(frame.ack(id, result))
    } catch (err) {
      this.session.fail(err, id, channel)
    }
  }

  private async presence ({ channel, id }: PresenceFrame): Promise<void> {
    try {
      const members = await this.services.presence.members(this.session.principal, channel)
      this.session.send(frame.presence(channel, id, members))
      if (id !== undefined) this.session.send(frame.ack(id, { channel }))
    } catch (err) {
      this.session.fail(err, id, channel)
    }
  }

  /**
   * A new token for the same subject extends the connection past the old token's expiry. Permissions are
   * checked again: subscriptions the new token no longer allows are ended.
   */
  private async refresh ({ token, id }: RefreshFrame): Promise<void> {
    try {
      const principal = await this.services.verifyToken(token)
      if (principal.sub !== this.session.sub) throw new Errors.UNAUTHORIZED('a refresh token must have the same sub')
      this.session.reauthorize(principal)
      if (id !== undefined) this.session.send(frame.ack(id, principal.exp === undefined ? {} : { exp: principal.exp }))
    } catch (err) {
      this.session.fail(err, id)
    }
  }

  /** Over the rate: an error frame; as many refused again within the window close the connection with 4008. */
  private rateLimited (): void {
    const now = Date.now()
    if (now - this.refusedSince > REFUSED_WINDOW_MS) { this.refusedSince = now; this.refused = 0 }
    if (++this.refused > this.services.limits.frameBurst) {
      this.services.metrics.errors.inc({ code: 'HERALD_ERR_RATE_LIMITED' })
      this.session.close(CloseCodes.POLICY_VIOLATION, 'sustained frame rate over the limit')
      return
    }
    this.session.fail(new Errors.RATE_LIMITED('1s'))
  }
}

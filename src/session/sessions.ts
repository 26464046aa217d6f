import type { Principal } from '../auth/permissions.js'
import type { Transport } from '../transports/transport.js'
import { CloseCodes } from '../protocol/codes.js'
import { describe } from '../protocol/json.js'
import { Errors } from '../errors.js'
import { Session, type SessionOptions, type SessionServices } from './session.js'
import { Commands, type CommandServices } from './commands.js'
import { SessionRegistry } from './registry.js'
import { KeyedBuckets } from './admission.js'

/** A place held for an admitted connection until it is open (or its request ends). */
export interface Admission { release: () => void }

export interface AdmissionLimits {
  maxConnections: number
  maxConnectionsPerSub: number
  /** CONNECT_RATE / CONNECT_BURST: new connections per second per client IP and per subject. */
  connectRate: number
  connectBurst: number
  /** CORS_ORIGINS: browser origins allowed to open a connection, or `*`. */
  origins: string[] | '*'
}

/**
 * The sessions of this node: opens them for the transports' routes, admits new connections (origin, connection
 * limits, drain) before any upgrade or stream starts, and closes them all on drain.
 */
export class Sessions {
  readonly registry: SessionRegistry
  /** True once shutdown began: readyz fails, new connections are refused, existing ones are ended. */
  draining = false
  private readonly drainListeners: Array<() => void> = []
  /** Places held by admitted connections not open yet (see admit). */
  private reserved = 0
  private readonly reservedBySub = new Map<string, number>()
  /** Connection churn per client IP (`ip:…`) and per subject (`sub:…`). */
  private readonly connects: KeyedBuckets
  /** What every session shares (one object: a spread per session gave each its own hidden class, ~400 bytes). */
  private readonly sessionServices: SessionServices

  constructor (
    private readonly services: Omit<SessionServices, 'registry'>,
    private readonly commandServices: CommandServices,
    private readonly limits: AdmissionLimits,
    nodeId: string
  ) {
    this.registry = new SessionRegistry(nodeId)
    this.sessionServices = { ...services, registry: this.registry }
    this.connects = new KeyedBuckets(limits.connectRate, limits.connectBurst)
  }

  /** Refuses a new connection (429, before any upgrade) past CONNECT_RATE for this client IP or subject. */
  throttleConnect (key: string): void {
    if (!this.connects.take(key)) throw new Errors.RATE_LIMITED(`1s (new connections of ${key.startsWith('ip:') ? 'this address' : 'this subject'})`)
  }

  /** A new session on `transport` for `principal` (taking over the place its admission held); see Session for the options. */
  open (transport: Transport, principal: Principal, options: SessionOptions = {}, admission?: Admission): Session {
    const session = new Session(this.sessionServices, transport, principal, options)
    admission?.release()
    return session
  }

  /** The handler of a two-way session's client frames. */
  commands (session: Session): Commands { return new Commands(session, this.commandServices) }

  /**
   * Browsers send `Origin` on WebSocket upgrades and cross-site EventSource requests, and CORS does not cover a
   * WebSocket: without this check any site could open a socket with a user's `?token=` (cross-site WebSocket
   * hijacking). Requests without `Origin` come from non-browser clients and pass. Shares CORS_ORIGINS.
   */
  checkOrigin (origin: string | undefined): void {
    const allowed = this.limits.origins
    if (allowed === '*' || origin === undefined) return
    if (!allowed.includes(origin)) throw new Errors.ORIGIN_NOT_ALLOWED(describe(origin))
  }

  /**
   * Admits a new connection — or refuses it while draining, or over the node's or the subject's connection limit —
   * and holds its place until it is open (`release` then, or when the request ends without one), so that a burst of
   * connections still on their way cannot slip past the limits together.
   */
  admit (principal: Principal): Admission {
    if (this.draining) throw new Errors.DRAINING()
    const { maxConnections, maxConnectionsPerSub } = this.limits
    const sub = principal.sub
    if (this.registry.count() + this.reserved >= maxConnections) throw new Errors.TOO_MANY_CONNECTIONS(`${maxConnections} on this node`)
    if (this.registry.countOf(sub) + (this.reservedBySub.get(sub) ?? 0) >= maxConnectionsPerSub) throw new Errors.TOO_MANY_CONNECTIONS(`${maxConnectionsPerSub} for ${sub} on this node`)
    this.reserved++
    this.reservedBySub.set(sub, (this.reservedBySub.get(sub) ?? 0) + 1)
    let held = true
    return {
      release: () => {
        if (!held) return
        held = false
        this.reserved--
        const n = (this.reservedBySub.get(sub) ?? 1) - 1
        if (n > 0) this.reservedBySub.set(sub, n)
        else this.reservedBySub.delete(sub)
      }
    }
  }

  /** Also called on drain: for state that is not a connection (long-poll sessions between polls). */
  onDrain (listener: () => void): void { this.drainListeners.push(listener) }

  /** Starts a graceful drain: new connections are refused, open ones are told to reconnect elsewhere (1012). */
  drain (): void {
    if (this.draining) return
    this.draining = true
    this.registry.closeAll(CloseCodes.SERVICE_RESTART, 'server shutting down; reconnect to another node')
    for (const listener of this.drainListeners) listener()
  }
}

import type { HeraldContext } from '../context.js'
import type { Principal } from '../auth/permissions.js'
import { Errors } from '../errors.js'
import { describe } from '../protocol/json.js'

/**
 * Browsers send `Origin` on WebSocket upgrades and cross-site EventSource requests, and neither is covered by CORS
 * for a WebSocket: without this check any site could open a socket with a user's `?token=` (cross-site WebSocket
 * hijacking). Requests without `Origin` come from non-browser clients and pass. Shares CORS_ORIGINS.
 */
export function checkOrigin (ctx: HeraldContext, origin: string | undefined): void {
  const allowed = ctx.config.corsOrigins
  if (allowed === '*' || origin === undefined) return
  if (!allowed.includes(origin)) throw new Errors.ORIGIN_NOT_ALLOWED(describe(origin))
}

/** Refuses a new WebSocket or SSE connection over the node's or the subject's connection limit. */
export function checkConnectionLimits (ctx: HeraldContext, principal: Principal): void {
  const { maxConnections, maxConnectionsPerSub } = ctx.config.limits
  if (ctx.connections.count('ws') + ctx.connections.count('sse') >= maxConnections) throw new Errors.TOO_MANY_CONNECTIONS(`${maxConnections} on this node`)
  if (ctx.connections.countOf(principal.sub) >= maxConnectionsPerSub) throw new Errors.TOO_MANY_CONNECTIONS(`${maxConnectionsPerSub} for ${principal.sub} on this node`)
}

/** A token bucket: `rate` tokens per second, at most `burst` saved up. */
export class TokenBucket {
  private tokens: number
  private last = Date.now()

  constructor (private readonly rate: number, private readonly burst: number) {
    this.tokens = burst
  }

  take (now = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.rate / 1000)
    this.last = now
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }
}

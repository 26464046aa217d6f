import type { FastifyRequest } from 'fastify'
import { Errors } from '../errors.js'
import { PATTERN_RE, type Principal } from './permissions.js'
import { isValidChannel } from '../protocol/channel.js'

/** Most patterns a token's `subscribe` or `publish` claim may carry. */
export const MAX_PATTERNS = 256

/**
 * Bearer header first, then — on the routes browsers cannot set headers for (EventSource, a browser WebSocket, and
 * the long-poll for symmetry; route `config.queryToken`) — `?token=`. Elsewhere a query token is not read: it would
 * end up in proxies' access logs and Referer headers.
 */
export function tokenOf (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (header !== undefined) {
    const match = /^Bearer\s+(\S+)$/i.exec(header)
    return match === null ? undefined : match[1]
  }
  if (request.routeOptions.config.queryToken !== true) return undefined
  const query = request.query as Record<string, unknown> | undefined
  const token = query?.token
  return typeof token === 'string' && token.length > 0 ? token : undefined
}

/** Turns verified claims into a principal, refusing tokens whose claims have the wrong shape. */
export function principalOf (claims: Record<string, unknown>): Principal {
  const { sub, subscribe = [], publish = [], exp, info, iat, jti, channels } = claims
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) throw new Errors.UNAUTHORIZED('claim "sub" must be a non-empty string')
  for (const [name, list] of [['subscribe', subscribe], ['publish', publish]] as const) {
    if (!Array.isArray(list) || list.length > MAX_PATTERNS || !list.every((p) => typeof p === 'string' && PATTERN_RE.test(p))) {
      throw new Errors.UNAUTHORIZED(`claim "${name}" must be an array of at most ${MAX_PATTERNS} channel patterns (channel characters and *, 1–256 each)`)
    }
  }
  // NumericDate may have a fraction; whole seconds are what frames and timers carry.
  const principal: Principal = { sub, subscribe: subscribe as string[], publish: publish as string[], exp: typeof exp === 'number' && Number.isFinite(exp) ? Math.floor(exp) : undefined, info }
  if (typeof iat === 'number' && Number.isFinite(iat)) principal.iat = Math.floor(iat)
  if (typeof jti === 'string' && jti.length > 0 && jti.length <= 256) principal.jti = jti
  if (channels !== undefined) {
    if (!Array.isArray(channels) || channels.length > MAX_PATTERNS || !channels.every(isValidChannel)) {
      throw new Errors.UNAUTHORIZED(`claim "channels" must be an array of at most ${MAX_PATTERNS} channel names`)
    }
    if (channels.length > 0) principal.channels = [...new Set(channels)]
  }
  return principal
}

/**
 * Tokens that verified, by their exact text. Backends publish with the same token again and again, and a
 * signature check plus claim checks is the largest fixed cost of a REST publish; a hit is one Map lookup.
 * An entry lives until the token's `exp` (then the token is refused as expired, as the verifier would), and
 * at most TTL_MS, so a token is checked against the key again at least every 10 minutes. Only successes are
 * kept; at most MAX entries (oldest first out), only tokens of a sane size.
 */
export class VerifiedTokens {
  static readonly MAX = 10_000
  static readonly TTL_MS = 600_000
  static readonly MAX_TOKEN_CHARS = 4096
  private readonly entries = new Map<string, { principal: Principal, until: number, expMs: number | undefined }>()

  get (token: string, now: number): Principal | undefined {
    const entry = this.entries.get(token)
    if (entry === undefined) return undefined
    if (entry.expMs !== undefined && now >= entry.expMs) { this.entries.delete(token); throw new Errors.TOKEN_EXPIRED() }
    if (now >= entry.until) { this.entries.delete(token); return undefined }
    return entry.principal
  }

  set (token: string, principal: Principal, now: number): void {
    if (token.length > VerifiedTokens.MAX_TOKEN_CHARS) return
    if (this.entries.size >= VerifiedTokens.MAX) this.entries.delete(this.entries.keys().next().value as string)
    const expMs = principal.exp === undefined ? undefined : principal.exp * 1000
    this.entries.set(token, { principal, until: now + VerifiedTokens.TTL_MS, expMs })
  }

  get size (): number { return this.entries.size }
}

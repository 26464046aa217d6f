import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import type { FastifyRequest } from 'fastify'
import type { HeraldConfig } from '../config.js'
import { Errors } from '../errors.js'
import { type Principal, type Action, can } from '../auth/permissions.js'

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null
  }
  interface FastifyInstance {
    /** Verifies the request's token (header or `?token=`) and returns its principal, or throws a HERALD_ERR_*. */
    authenticate: (request: FastifyRequest) => Promise<Principal>
    /** Throws HERALD_ERR_FORBIDDEN unless the principal may do `action` on `channel`. */
    authorize: (principal: Principal, action: Action, channel: string) => void
  }
}

/** Bearer header first, then `?token=` for clients that cannot set headers (EventSource, browser WebSocket). */
export function tokenOf (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (header !== undefined) {
    const match = /^Bearer\s+(\S+)$/i.exec(header)
    return match === null ? undefined : match[1]
  }
  const query = request.query as Record<string, unknown> | undefined
  const token = query?.token
  return typeof token === 'string' && token.length > 0 ? token : undefined
}

/** The verification key; config.ts has already checked it against the algorithms and read a key file. */
function keyOf (config: HeraldConfig): string | { public: string } {
  const { publicKey, secret } = config.jwt
  if (publicKey !== undefined) return { public: publicKey }
  if (secret === undefined) throw new Error('no JWT key configured')
  return secret
}

/** Turns verified claims into a principal, refusing tokens whose claims have the wrong shape. */
export function principalOf (claims: Record<string, unknown>): Principal {
  const { sub, subscribe = [], publish = [], exp, info } = claims
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) throw new Errors.UNAUTHORIZED('claim "sub" must be a non-empty string')
  for (const [name, list] of [['subscribe', subscribe], ['publish', publish]] as const) {
    if (!Array.isArray(list) || list.length > 256 || !list.every((p) => typeof p === 'string' && p.length > 0 && p.length <= 256)) {
      throw new Errors.UNAUTHORIZED(`claim "${name}" must be an array of channel patterns`)
    }
  }
  return { sub, subscribe: subscribe as string[], publish: publish as string[], exp: typeof exp === 'number' ? exp : undefined, info }
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

export default fp(async function authPlugin (fastify, opts: { config: HeraldConfig }) {
  await fastify.register(fastifyJwt, {
    secret: keyOf(opts.config),
    verify: { algorithms: opts.config.jwt.algorithms as never, extractToken: tokenOf }
  })
  fastify.decorateRequest('principal', null)
  const verified = new VerifiedTokens()

  async function verifyToken (token: string): Promise<Principal> {
    const cached = verified.get(token, Date.now())
    if (cached !== undefined) return cached
    const principal = verifyUncached(token)
    verified.set(token, principal, Date.now())
    return principal
  }

  function verifyUncached (token: string): Principal {
    let claims: Record<string, unknown>
    try {
      claims = fastify.jwt.verify(token)
    } catch (err) {
      const code = (err as { code?: string }).code ?? ''
      if (code.includes('EXPIRED')) throw new Errors.TOKEN_EXPIRED()
      throw new Errors.UNAUTHORIZED(code === 'FAST_JWT_INVALID_ALGORITHM' ? 'algorithm not allowed' : 'token could not be verified')
    }
    if (claims === null || typeof claims !== 'object') throw new Errors.UNAUTHORIZED('claims are not an object')
    return principalOf(claims)
  }

  fastify.decorate('verifyToken', verifyToken)
  fastify.decorate('authenticate', async (request: FastifyRequest) => {
    const token = tokenOf(request)
    if (token === undefined) throw new Errors.UNAUTHORIZED('no token (send "Authorization: Bearer <jwt>" or ?token=<jwt>)')
    const principal = await verifyToken(token)
    request.principal = principal
    return principal
  })
  fastify.decorate('authorize', (principal: Principal, action: Action, channel: string) => {
    if (!can(principal, action, channel)) throw new Errors.FORBIDDEN(action, channel)
  })
}, { name: 'herald-auth' })

declare module 'fastify' {
  interface FastifyInstance {
    /** Verifies a bare token (e.g. from a WebSocket `refresh` frame). */
    verifyToken: (token: string) => Promise<Principal>
  }
}

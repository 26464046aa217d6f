import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import type { FastifyRequest } from 'fastify'
import type { HeraldConfig } from '../config.js'
import { Errors } from '../errors.js'
import { type Principal, type Action, can } from '../auth/permissions.js'
import { VerifiedTokens, principalOf, tokenOf } from '../auth/jwt.js'

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null
  }
  interface FastifyInstance {
    /** Verifies the request's token (header or `?token=`) and returns its principal, or throws a HERALD_ERR_*. */
    authenticate: (request: FastifyRequest) => Promise<Principal>
    /** Throws HERALD_ERR_FORBIDDEN unless the principal may do `action` on `channel`. */
    authorize: (principal: Principal, action: Action, channel: string) => void
    /** Verifies a bare token (e.g. from a WebSocket `refresh` frame). */
    verifyToken: (token: string) => Promise<Principal>
  }
}

/** The verification key; config.ts has already checked it against the algorithms and read a key file. */
function keyOf (config: HeraldConfig): string | { public: string } {
  const { publicKey, secret } = config.jwt
  if (publicKey !== undefined) return { public: publicKey }
  if (secret === undefined) throw new Error('no JWT key configured')
  return secret
}

export default fp(async function authPlugin (fastify) {
  const config = fastify.heraldConfig
  await fastify.register(fastifyJwt, {
    secret: keyOf(config),
    verify: { algorithms: config.jwt.algorithms as never, extractToken: tokenOf }
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
}, { name: 'herald-auth', dependencies: ['herald-config'] })


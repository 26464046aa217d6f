import { createHash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import type { FastifyRequest } from 'fastify'
import type { HeraldConfig } from '../config.js'
import { Errors, asHeraldError, isTemporary } from '../errors.js'
import { describe } from '../protocol/json.js'
import { type Principal, type Action, can } from '../auth/permissions.js'
import { VerifiedTokens, principalOf, tokenOf } from '../auth/jwt.js'
import { KeyedCounter } from '../session/admission.js'
import type { TransportName } from '../protocol/transports.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The token may come as `?token=` (WebSocket, SSE, long-poll: clients that cannot set headers). */
    queryToken?: boolean
    /** A transport's route: a request without a token may be admitted by the connect hook (docs/proxy.md). */
    transport?: TransportName
  }
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
    /** Checks the request's `X-API-Key` against API_KEYS (the server API), or throws a HERALD_ERR_*. */
    authenticateApiKey: (request: FastifyRequest) => void
  }
}

/** What a refused token is told, by fast-jwt's code (anything else: "could not be verified"). */
const VERIFY_FAILURES: Record<string, string> = {
  FAST_JWT_INVALID_ALGORITHM: 'algorithm not allowed',
  FAST_JWT_MISSING_REQUIRED_CLAIM: 'a required claim is missing (exp with JWT_REQUIRE_EXP, aud with JWT_AUDIENCE, iss with JWT_ISSUER)',
  FAST_JWT_INVALID_CLAIM_VALUE: 'aud or iss is not one this server accepts (JWT_AUDIENCE, JWT_ISSUER)'
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
  const { jwt } = config
  await fastify.register(fastifyJwt, {
    secret: keyOf(config),
    verify: {
      algorithms: jwt.algorithms as never,
      extractToken: tokenOf,
      // A configured audience or issuer must be there, not merely right when present.
      requiredClaims: [...(jwt.requireExp === true ? ['exp'] : []), ...(jwt.audience === undefined ? [] : ['aud']), ...(jwt.issuer === undefined ? [] : ['iss'])],
      ...(jwt.audience === undefined ? {} : { allowedAud: jwt.audience }),
      ...(jwt.issuer === undefined ? {} : { allowedIss: jwt.issuer })
    }
  })
  fastify.decorateRequest('principal', null)
  const verified = new VerifiedTokens()
  // Failed authentications count against the client IP's REST budget: past it, its requests are refused before
  // any signature is checked (a flood of bad tokens would otherwise cost a verification each, unlimited).
  const failures = new KeyedCounter(config.limits.restMax, config.limits.restWindowSeconds * 1000)

  // A revoked token is refused however it verifies, cached or not (revocations change; the cache does not).
  const revocations = fastify.heraldRevocations.list
  async function verifyToken (token: string): Promise<Principal> {
    let principal = verified.get(token, Date.now())
    if (principal === undefined) {
      principal = verifyUncached(token)
      verified.set(token, principal, Date.now())
    }
    const revoked = revocations.check(principal)
    if (revoked !== undefined) throw new Errors.TOKEN_REVOKED(revoked)
    return principal
  }

  function verifyUncached (token: string): Principal {
    let claims: Record<string, unknown>
    try {
      claims = fastify.jwt.verify(token)
    } catch (err) {
      const code = (err as { code?: string }).code ?? ''
      if (code.includes('EXPIRED')) throw new Errors.TOKEN_EXPIRED()
      throw new Errors.UNAUTHORIZED(VERIFY_FAILURES[code] ?? 'token could not be verified')
    }
    if (claims === null || typeof claims !== 'object') throw new Errors.UNAUTHORIZED('claims are not an object')
    return principalOf(claims)
  }

  /**
   * A connection without a token, admitted by the application's connect hook from its own credentials (a session
   * cookie, say: PROXY_HEADERS). Its answer is checked like token claims, and it counts as issued now: a later
   * revocation of its subject closes it, an earlier one does not refuse it (the application admitted it since).
   */
  const proxy = fastify.heraldProxy
  async function connectByHook (transport: TransportName, request: FastifyRequest): Promise<Principal> {
    // A browser sends its cookies with a WebSocket opened by any site (CORS does not cover WebSockets): admitted by
    // cookie, any page could act as the user. So a hook-admitted request from a browser must come from an allowed
    // origin: one of CORS_ORIGINS, or with CORS_ORIGINS `*`, a page of this very host.
    const origin = request.headers.origin
    if (origin !== undefined && !originAllowed(origin, request.headers.host, config.corsOrigins)) throw new Errors.ORIGIN_NOT_ALLOWED(describe(origin) + ' (a connection admitted by the connect hook; see docs/proxy.md)')
    const answer = await proxy.call('connect', { transport, headers: proxy.selectHeaders(request.headers), ip: request.ip })
    let principal: Principal
    try {
      principal = principalOf(answer as Record<string, unknown>)
    } catch (err) {
      fastify.log.warn({ err: (err as Error).message }, 'connect hook answer refused')
      throw new Errors.PROXY_UNAVAILABLE('connect', 'its answer is not valid: ' + (err as Error).message)
    }
    const now = Date.now() / 1000
    if (principal.exp !== undefined && principal.exp <= now) throw new Errors.PROXY_UNAVAILABLE('connect', 'it answered an exp in the past')
    principal.iat = Math.floor(now)
    principal.proxied = true
    const revoked = revocations.check(principal)
    if (revoked !== undefined) throw new Errors.TOKEN_REVOKED(revoked)
    return principal
  }

  fastify.decorate('verifyToken', verifyToken)
  fastify.decorate('authenticate', async (request: FastifyRequest) => {
    const blocked = failures.blockedFor(request.ip)
    if (blocked > 0) throw new Errors.RATE_LIMITED(`${Math.ceil(blocked / 1000)}s (too many failed authentications)`)
    try {
      const token = tokenOf(request)
      const transport = request.routeOptions.config.transport
      if (token === undefined && transport !== undefined && proxy.has('connect')) {
        request.principal = await connectByHook(transport, request)
        return request.principal
      }
      if (token === undefined) throw new Errors.UNAUTHORIZED(request.routeOptions.config.queryToken === true ? 'no token (send "Authorization: Bearer <jwt>" or ?token=<jwt>)' : 'no token (send "Authorization: Bearer <jwt>")')
      const principal = await verifyToken(token)
      request.principal = principal
      return principal
    } catch (err) {
      // A hook that is down says nothing about the client: only refusals count.
      if (!isTemporary(asHeraldError(err))) failures.add(request.ip)
      throw err
    }
  })
  // Keys are compared as SHA-256 digests (equal lengths for timingSafeEqual), every key every time: how long a
  // refusal takes says nothing about how close a guess was, nor which key it was near.
  const apiKeys = config.api.keys.map(digest)
  fastify.decorate('authenticateApiKey', (request: FastifyRequest) => {
    if (apiKeys.length === 0) throw new Errors.API_DISABLED()
    const blocked = failures.blockedFor(request.ip)
    if (blocked > 0) throw new Errors.RATE_LIMITED(`${Math.ceil(blocked / 1000)}s (too many failed authentications)`)
    const given = request.headers['x-api-key']
    if (typeof given !== 'string' || given === '') {
      failures.add(request.ip)
      throw new Errors.BAD_API_KEY('send the X-API-Key header (user tokens are not accepted here)')
    }
    const mine = digest(given)
    let ok = false
    for (const key of apiKeys) ok = timingSafeEqual(mine, key) || ok
    if (!ok) {
      failures.add(request.ip)
      throw new Errors.BAD_API_KEY('not one of API_KEYS')
    }
  })
  fastify.decorate('authorize', (principal: Principal, action: Action, channel: string) => {
    if (!can(principal, action, channel)) throw new Errors.FORBIDDEN(action, channel)
  })
}, { name: 'herald-auth', dependencies: ['herald-config', 'herald-revocations', 'herald-proxy'] })

function digest (text: string): Buffer { return createHash('sha256').update(text).digest() }

/** A listed origin, or (with `*`) one whose host is the request's own. */
function originAllowed (origin: string, host: string | undefined, allowed: string[] | '*'): boolean {
  if (allowed !== '*') return allowed.includes(origin)
  try {
    return host !== undefined && new URL(origin).host === host.toLowerCase()
  } catch {
    return false
  }
}



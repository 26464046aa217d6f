import type { FastifyInstance } from 'fastify'
import rateLimit from '../../src/plugins/rate-limit.js'
import { Errors } from '../../src/errors.js'
import type { Admission as HeldPlace } from '../../src/session/sessions.js'

/** How a /v1 route admits a request (route `config.admission`). */
export type Admission =
  /** REST: a token (rate-limited per subject). */
  | 'rest'
  /** A long-poll: a token, not while draining, under the connection limits (a waiting poll is a connection). */
  | 'poll'
  /** A connection (SSE; WebSocket upgrades): a token, not while draining, an allowed Origin, under the connection limits. */
  | 'connection'
  /** The server API: an `X-API-Key` of API_KEYS, never a user token (docs/server-api.md). */
  | 'api'

declare module 'fastify' {
  interface FastifyRequest {
    /** The place a connection route's admission holds for this request (routes/v1/autohooks.ts). */
    admission: HeldPlace | null
  }
  interface FastifyContextConfig {
    admission?: Admission
    /** The route answers only WebSocket upgrades; a plain GET goes to its handler (426) without admission. */
    upgradeOnly?: boolean
  }
}

/**
 * Shared by every /v1 route: authentication in `onRequest`, before any body is read, any upgrade is done or any
 * stream starts; then REST rate limits (connection routes opt out: they have connection limits instead).
 */
export default async function v1Hooks (fastify: FastifyInstance): Promise<void> {
  const sessions = fastify.heraldSessions
  fastify.decorateRequest('admission', null)
  fastify.addHook('onRequest', async (request) => {
    const admission = request.routeOptions.config.admission ?? 'rest'
    if (admission === 'api') { fastify.authenticateApiKey(request); return }
    if (admission === 'rest') { await fastify.authenticate(request); return }
    // A plain GET of the WebSocket route is answered 426 by its handler, without a token.
    if (request.routeOptions.config.upgradeOnly === true && !request.ws) return
    if (sessions.draining) throw new Errors.DRAINING()
    if (admission === 'connection') {
      sessions.checkOrigin(request.headers.origin)
      sessions.throttleConnect('ip:' + request.ip)
    }
    const principal = await fastify.authenticate(request)
    if (admission === 'connection') sessions.throttleConnect('sub:' + principal.sub)
    const admitted = sessions.admit(principal)
    request.admission = admitted
    // Opening the connection takes the place over; a request that ends without one gives it back.
    request.raw.once('close', admitted.release)
  })
  await fastify.register(rateLimit)
}

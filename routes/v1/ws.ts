import type { FastifyPluginAsync } from 'fastify'
import Type from 'typebox'
import { ErrorBody } from '../../src/schemas.js'
import { Errors } from '../../src/errors.js'
import { WsSession } from '../../src/transports/ws.js'
import { CloseCodes } from '../../src/protocol/codes.js'
import { checkConnectionLimits, checkOrigin } from '../../src/transports/admission.js'

const wsRoutes: FastifyPluginAsync = async (fastify) => {
  const ctx = fastify.herald
  const sessions = new Set<WsSession>()

  // One liveness loop for every socket (the `ws` README's isAlive pattern): a socket that did not answer the
  // previous ping is terminated; the others are pinged again. The round is spread over the interval in slices, so
  // no tick writes to more than a small share of the sockets (a burst of writes in one tick is a latency spike for all).
  // A tick every 250 ms at most (10,000 sockets and the default 25 s: 100 pings a tick, not 10,000 at once).
  const SLICES = Math.max(10, ctx.config.wsPingIntervalSeconds * 4)
  let slice = 0
  const heartbeat = setInterval(() => {
    slice = (slice + 1) % SLICES
    for (const session of sessions) {
      if (session.heartbeatSlice !== slice) continue
      if (!session.alive) {
        ctx.metrics.heartbeatTimeouts.inc()
        session.terminate('heartbeat timeout')
        continue
      }
      session.alive = false
      session.ping()
    }
  }, ctx.config.wsPingIntervalSeconds * 1000 / SLICES).unref()
  fastify.addHook('onClose', async () => { clearInterval(heartbeat) })

  fastify.route({
    method: 'GET',
    url: '/ws',
    schema: {
      summary: 'WebSocket endpoint',
      description: 'Upgrade to a WebSocket speaking the JSON frames of docs/protocol.md. The token (Authorization header or `?token=`) is checked before the upgrade: a bad one is answered 401/403 and never upgraded. A plain GET answers 426.',
      tags: ['transports'],
      security: [{ bearer: [] }],
      querystring: Type.Object({ token: Type.Optional(Type.String()) }),
      response: { 401: ErrorBody, 403: ErrorBody, 426: ErrorBody, 429: ErrorBody, 503: ErrorBody }
    },
    onRequest: async (request) => {
      if (!request.ws) return // the plain-HTTP handler answers 426
      if (ctx.draining) throw new Errors.DRAINING()
      checkOrigin(ctx, request.headers.origin)
      checkConnectionLimits(ctx, await fastify.authenticate(request))
    },
    handler: async (_request, reply) => {
      reply.header('upgrade', 'websocket')
      throw new Errors.UPGRADE_REQUIRED()
    },
    wsHandler: (socket, request) => {
      if (ctx.draining) { socket.close(CloseCodes.SERVICE_RESTART, 'server shutting down'); return }
      // @fastify/websocket's 'error' listener closes over the upgrade's request and reply, keeping them (and the raw
      // request and response) alive as long as the socket: several KiB per idle connection. Ours needs neither.
      socket.removeAllListeners('error')
      const raw = (socket as unknown as { _socket?: { _httpMessage?: unknown } })._socket
      if (raw !== undefined) raw._httpMessage = null // the ServerResponse @fastify/websocket assigned to route the upgrade
      socket.on('error', (err) => { ctx.log.debug({ err: err.message }, 'websocket error'); socket.terminate() })
      const session = new WsSession(ctx, socket, request.principal!)
      session.heartbeatSlice = sessions.size % SLICES
      sessions.add(session)
      ctx.log.info({ client: session.id, sub: session.principal.sub, ip: request.ip }, 'websocket open')
      socket.on('close', () => sessions.delete(session))
    }
  })
}

export default wsRoutes

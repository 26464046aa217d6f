import type { FastifyPluginAsync } from 'fastify'
import Type from 'typebox'
import type { Logger } from 'pino'
import { ErrorBody } from '../../src/schemas.js'
import { Errors } from '../../src/errors.js'
import { CloseCodes } from '../../src/protocol/codes.js'
import { frame } from '../../src/protocol/frames.js'
import { WsHeartbeat, WsTransport } from '../../src/transports/ws.js'

const wsRoutes: FastifyPluginAsync = async (fastify) => {
  const { heraldSessions: sessions, heraldConfig: config, heraldMetrics: metrics } = fastify
  const heartbeat = new WsHeartbeat(config.wsPingIntervalSeconds, () => { metrics.heartbeatTimeouts.inc(); metrics.events.record('heartbeat-timeout', 'a WebSocket missed a pong: terminated') })
  fastify.addHook('onClose', async () => { heartbeat.stop() })

  fastify.route({
    method: 'GET',
    url: '/ws',
    config: { admission: 'connection', upgradeOnly: true, rateLimit: false, queryToken: true },
    schema: {
      summary: 'WebSocket endpoint',
      description: 'Upgrade to a WebSocket speaking the JSON frames of docs/protocol.md. The token (Authorization header or `?token=`) is checked before the upgrade: a bad one is answered 401/403 and never upgraded. A plain GET answers 426.',
      tags: ['transports'],
      security: [{ bearer: [] }],
      querystring: Type.Object({ token: Type.Optional(Type.String()) }),
      response: { 401: ErrorBody, 403: ErrorBody, 426: ErrorBody, 429: ErrorBody, 503: ErrorBody }
    },
    handler: async (_request, reply) => {
      reply.header('upgrade', 'websocket')
      throw new Errors.UPGRADE_REQUIRED()
    },
    wsHandler: (socket, request) => {
      if (sessions.draining) { socket.close(CloseCodes.SERVICE_RESTART, 'server shutting down'); return }
      // @fastify/websocket's 'error' listener closes over the upgrade's request and reply, keeping them (and the raw
      // request and response) alive as long as the socket: several KiB per idle connection. Ours needs neither.
      socket.removeAllListeners('error')
      const raw = (socket as unknown as { _socket?: { _httpMessage?: unknown } })._socket
      if (raw !== undefined) raw._httpMessage = null // the ServerResponse @fastify/websocket assigned to route the upgrade
      // The listeners below outlive the upgrade: they must not hold `request` (and the raw request with it) nor its
      // child logger (a pino child per connection, ~300 bytes): the node's logger, with the client id, will do.
      const log = fastify.log
      socket.on('error', (err) => { log.debug({ err: err.message }, 'websocket error'); socket.terminate() })
      const transport = new WsTransport(socket, metrics.delivered)
      const session = sessions.open(transport, request.principal!, {}, request.admission ?? undefined)
      transport.attach(session, sessions.commands(session), log as unknown as Logger)
      heartbeat.add(transport)
      socket.on('close', () => heartbeat.delete(transport))
      request.log.info({ client: session.id, sub: session.sub, ip: request.ip }, 'websocket open')
      session.send(frame.connected({ client: session.id, sub: session.sub, pingInterval: config.wsPingIntervalSeconds }))
    }
  })
}

export default wsRoutes

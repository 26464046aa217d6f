import type { FastifyPluginAsync } from 'fastify'
import Type from 'typebox'
import type { Logger } from 'pino'
import { ErrorBody, RefusalBody } from '../../src/schemas.js'
import { Errors } from '../../src/errors.js'
import { CloseCodes } from '../../src/protocol/codes.js'
import { frame } from '../../src/protocol/frames.js'
import { type Cursor, decodeCursor } from '../../src/protocol/cursor.js'
import { WsHeartbeat, WsTransport } from '../../src/transports/ws.js'

const wsRoutes: FastifyPluginAsync = async (fastify) => {
  /** The decoded `?cursor=` of an upgrade, from its preHandler to its handler (gone with the request). */
  const cursors = new WeakMap<object, Cursor>()
  const { heraldSessions: sessions, heraldConfig: config, heraldMetrics: metrics } = fastify
  const heartbeat = new WsHeartbeat(config.wsPingIntervalSeconds, () => { metrics.heartbeatTimeouts.inc(); metrics.events.record('heartbeat-timeout', 'a WebSocket missed a pong: terminated') })
  fastify.addHook('onClose', async () => { heartbeat.stop() })

  fastify.route({
    method: 'GET',
    url: '/ws',
    config: { admission: 'connection', upgradeOnly: true, rateLimit: false, queryToken: true, transport: 'websocket' },
    schema: {
      summary: 'WebSocket endpoint',
      description: 'Upgrade to a WebSocket speaking the JSON frames of docs/protocol.md. The token (Authorization header or `?token=`) is checked before the upgrade: a bad one is answered 401/403 and never upgraded. A plain GET answers 426.',
      tags: ['transports'],
      security: [{ bearer: [] }],
      querystring: Type.Object({
        token: Type.Optional(Type.String()),
        cursor: Type.Optional(Type.String({ description: 'Where the server-made subscriptions (the token\'s or connect hook\'s `channels`) resume: a cursor of their positions (docs/protocol.md)' }))
      }),
      response: { 400: ErrorBody, 401: RefusalBody, 403: RefusalBody, 426: ErrorBody, 429: ErrorBody, 503: ErrorBody }
    },
    // Checked before the upgrade, so that a bad cursor is an HTTP 400 and never a subscription from nowhere.
    preHandler: async (request) => {
      const text = (request.query as { cursor?: string }).cursor
      const channels = request.principal?.channels
      if (text !== undefined && text !== '' && channels !== undefined) cursors.set(request, decodeCursor(text, channels))
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
      // The ServerResponse @fastify/websocket assigned to route the upgrade: detached, which also removes its 'close'
      // listener from the socket (one listener array less per connection).
      const raw = (socket as unknown as { _socket?: { _httpMessage?: { detachSocket?: (s: unknown) => void } | null } })._socket
      if (raw?._httpMessage != null) { if (typeof raw._httpMessage.detachSocket === 'function') raw._httpMessage.detachSocket(raw); else raw._httpMessage = null }
      // The listeners below outlive the upgrade: they must not hold `request` (and the raw request with it) nor its
      // child logger (a pino child per connection, ~300 bytes): the node's logger, with the client id, will do.
      const log = fastify.log
      socket.on('error', (err) => { log.debug({ err: err.message }, 'websocket error'); socket.terminate() })
      const transport = new WsTransport(socket, metrics.delivered, config.ws.writeDelayMs)
      const session = sessions.open(transport, request.principal!, {}, request.admission ?? undefined)
      transport.attach(session, sessions.commands(session), log as unknown as Logger)
      heartbeat.add(transport)
      request.log.info({ client: session.id, sub: session.sub, ip: request.ip }, 'websocket open')
      const channels = session.principal.channels
      session.send(frame.connected({ client: session.id, sub: session.sub, pingInterval: config.wsPingIntervalSeconds, ...(channels === undefined ? {} : { channels }) }))
      // The token's (or connect hook's) channels: subscribed by the server, from where the client's cursor says.
      if (channels === undefined) return
      const cursor = cursors.get(request)
      for (const channel of channels) {
        try {
          session.subscribe(channel, cursor?.get(channel), true).catch((err: unknown) => session.fail(err, undefined, channel))
        } catch (err) {
          session.fail(err, undefined, channel)
        }
      }
    }
  })
}

export default wsRoutes

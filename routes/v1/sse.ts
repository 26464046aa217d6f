import type { FastifyPluginAsync } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { ErrorBody, RefusalBody, StreamQuery } from '../../src/schemas.js'
import { CloseCodes } from '../../src/protocol/codes.js'
import { asHeraldError, errorBody, isTemporary } from '../../src/errors.js'
import { frame } from '../../src/protocol/frames.js'
import { SseTransport } from '../../src/transports/sse.js'
import { parseStreamRequest } from '../../src/transports/stream-request.js'

const sseRoutes: FastifyPluginAsync = async (plain) => {
  const fastify = plain.withTypeProvider<TypeBoxTypeProvider>()
  const { heraldSessions: sessions, heraldConfig: config, heraldNamespaces: namespaces, heraldMetrics: metrics } = fastify

  fastify.get('/sse', {
    config: { admission: 'connection', rateLimit: false, queryToken: true, transport: 'sse' },
    schema: {
      summary: 'Server-Sent Events stream',
      description: 'A `text/event-stream` of server frames (docs/protocol.md). Each event\'s `id:` is a cursor of all the stream\'s channels; reconnect with `Last-Event-ID` (or `?cursor=`) to resume exactly after it, on any node.',
      tags: ['transports'],
      security: [{ bearer: [] }],
      querystring: StreamQuery,
      headers: Type.Object({ 'last-event-id': Type.Optional(Type.String()) }),
      produces: ['text/event-stream'],
      response: { 200: Type.String({ description: 'text/event-stream' }), 400: ErrorBody, 401: RefusalBody, 403: RefusalBody, 409: ErrorBody, 429: ErrorBody, 503: ErrorBody }
    }
  }, async (request, reply) => {
    const { channel, cursor, delta } = request.query
    const deltas = new Set(delta ?? [])
    const stream = parseStreamRequest({ maxSubscriptions: config.maxSubscriptions, namespaces }, request.principal!, channel, request.headers['last-event-id'] ?? cursor)
    reply.hijack()
    const transport = new SseTransport(reply.raw, metrics.delivered)
    const session = sessions.open(transport, request.principal!, {}, request.admission ?? undefined)
    transport.attach(session, reply.getHeaders(), config.sseHeartbeatSeconds)
    request.log.info({ client: session.id, sub: session.sub, channels: stream.channels.length, resume: stream.cursor.size }, 'sse open')
    const server = [...stream.serverChannels]
    session.send(frame.connected({ client: session.id, sub: session.sub, pingInterval: config.sseHeartbeatSeconds, ...(server.length === 0 ? {} : { channels: server }) }))
    for (const [ch, pos] of stream.cursor) session.cursor.set(ch, pos)
    // The stream opens once every channel is subscribed, so that a refusal can still be an HTTP error.
    const results = await Promise.allSettled(stream.channels.map(async (ch) => await session.subscribe(ch, stream.cursor.get(ch), stream.serverChannels.has(ch), deltas.has(ch))))
    const failed = stream.channels.findIndex((_, i) => results[i].status === 'rejected')
    if (failed === -1 || session.closed) { transport.open(); return }
    const err = asHeraldError((results[failed] as PromiseRejectedResult).reason)
    if (isTemporary(err)) {
      // It may pass: the stream opens, says why, and ends with a code that tells the client to come back.
      transport.open()
      session.fail(err, undefined, stream.channels[failed])
      session.close(CloseCodes.SERVICE_RESTART, 'subscribe failed: ' + err.code)
      return
    }
    // It will not pass by itself (a full channel, a refused namespace): an HTTP error, which stops an EventSource.
    metrics.errors.inc({ code: err.code })
    if (err.statusCode === 429) metrics.events.record('refused', `SSE stream of ${session.sub}: ${err.message}`, err.code)
    session.gone('refused: ' + err.code)
    transport.refuse(err.statusCode, JSON.stringify(errorBody(err)))
  })
}

export default sseRoutes

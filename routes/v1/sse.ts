import type { FastifyPluginAsync } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { ErrorBody, StreamQuery } from '../../src/schemas.js'
import { Errors } from '../../src/errors.js'
import { SseSession } from '../../src/transports/sse.js'
import { parseStreamRequest } from '../../src/transports/stream-request.js'
import { checkConnectionLimits, checkOrigin } from '../../src/transports/admission.js'

const sseRoutes: FastifyPluginAsync = async (plain) => {
  const fastify = plain.withTypeProvider<TypeBoxTypeProvider>()
  const ctx = fastify.herald
  plain.addHook('onRequest', async (request) => {
    if (ctx.draining) throw new Errors.DRAINING()
    checkOrigin(ctx, request.headers.origin)
    checkConnectionLimits(ctx, await plain.authenticate(request))
  })

  fastify.get('/sse', {
    schema: {
      summary: 'Server-Sent Events stream',
      description: 'A `text/event-stream` of server frames (docs/protocol.md). Each event\'s `id:` is a cursor of all the stream\'s channels; reconnect with `Last-Event-ID` (or `?cursor=`) to resume exactly after it, on any node.',
      tags: ['transports'],
      security: [{ bearer: [] }],
      querystring: StreamQuery,
      headers: Type.Object({ 'last-event-id': Type.Optional(Type.String()) }),
      produces: ['text/event-stream'],
      response: { 200: Type.String({ description: 'text/event-stream' }), 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 429: ErrorBody, 503: ErrorBody }
    },
  }, async (request, reply) => {
    const { channel, cursor } = request.query
    const stream = parseStreamRequest(ctx, request.principal!, channel, request.headers['last-event-id'] ?? cursor)
    reply.hijack()
    const session = new SseSession(ctx, reply.raw, request.principal!, reply.getHeaders())
    ctx.log.info({ client: session.id, sub: session.principal.sub, channels: stream.channels.length, resume: stream.cursor.size }, 'sse open')
    session.start(stream)
  })
}

export default sseRoutes

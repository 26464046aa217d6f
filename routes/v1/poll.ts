import type { FastifyPluginAsync } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ErrorBody, PollQuery, PollReply , sendJsonText } from '../../src/schemas.js'
import { Errors } from '../../src/errors.js'
import { PollWaiter, type PollAnswer } from '../../src/transports/long-poll.js'
import { parseStreamRequest } from '../../src/transports/stream-request.js'

const pollRoutes: FastifyPluginAsync = async (plain) => {
  const fastify = plain.withTypeProvider<TypeBoxTypeProvider>()
  const ctx = fastify.herald
  plain.addHook('onRequest', async (request) => {
    if (ctx.draining) throw new Errors.DRAINING()
    await plain.authenticate(request)
  })

  fastify.get('/poll', {
    schema: {
      summary: 'Long-poll',
      description: 'Answers at once when events after `cursor` exist, otherwise waits up to `timeout` seconds. Send the answer\'s `cursor` with the next poll, to any node.',
      tags: ['transports'],
      security: [{ bearer: [] }],
      querystring: PollQuery,
      response: { 200: PollReply, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 503: ErrorBody }
    },
  }, async (request, reply) => {
    const { channel, cursor, timeout } = request.query
    const stream = parseStreamRequest(ctx, request.principal!, channel, cursor)
    const seconds = Math.min(timeout ?? 25, ctx.config.pollTimeoutMax)
    const answer = await new Promise<PollAnswer>((resolve) => {
      const waiter = new PollWaiter(ctx, resolve)
      reply.raw.on('close', () => waiter.close())
      waiter.start(stream, seconds)
    })
    if ('error' in answer) throw answer.error
    sendJsonText(reply, answer.body)
  })
}

export default pollRoutes

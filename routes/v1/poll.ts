import type { FastifyPluginAsync } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ErrorBody, PollQuery, PollReply, RefusalBody, sendJsonText } from '../../src/schemas.js'
import { parseStreamRequest } from '../../src/transports/stream-request.js'

const pollRoutes: FastifyPluginAsync = async (plain) => {
  const fastify = plain.withTypeProvider<TypeBoxTypeProvider>()
  const { heraldPolls: polls, heraldConfig: config, heraldNamespaces: namespaces } = fastify

  fastify.get('/poll', {
    config: { admission: 'poll', queryToken: true, transport: 'long-poll' },
    schema: {
      summary: 'Long-poll',
      description: 'Answers at once when events after `cursor` exist, otherwise waits up to `timeout` seconds. Send the answer\'s `cursor` with the next poll, to any node.',
      tags: ['transports'],
      security: [{ bearer: [] }],
      querystring: PollQuery,
      response: { 200: PollReply, 400: ErrorBody, 401: RefusalBody, 403: RefusalBody, 429: ErrorBody, 503: ErrorBody }
    }
  }, async (request, reply) => {
    const { channel, cursor, timeout } = request.query
    const stream = parseStreamRequest({ maxSubscriptions: config.maxSubscriptions, namespaces }, request.principal!, channel, cursor)
    const seconds = Math.min(timeout ?? 25, config.pollTimeoutMax)
    const answer = await polls.poll(request.principal!, stream, seconds, (cancel) => reply.raw.on('close', cancel), request.admission ?? undefined)
    if ('error' in answer) throw answer.error
    sendJsonText(reply, answer.body)
  })
}

export default pollRoutes

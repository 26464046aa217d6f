import type { FastifyPluginAsync } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ChannelParams, ErrorBody, WhoAmIReply, PresenceReply, PresenceCountReply, HistoryQuery, HistoryReply, PublishBody, PublishHeaders, PublishReply, historyJson, historyLimit, sendJsonText } from '../../src/schemas.js'
import { Errors } from '../../src/errors.js'
import { HistoryRemovedReply } from '../../src/control/schemas.js'

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 503: ErrorBody }

const channelRoutes: FastifyPluginAsync = async (plain) => {
  const fastify = plain.withTypeProvider<TypeBoxTypeProvider>()
  const { heraldConfig: config, heraldBus: bus, heraldNamespaces: namespaces, heraldPublisher: publisher, heraldPresence: presence } = fastify

  fastify.post('/channels/:channel/events', {
    bodyLimit: config.maxBodyBytes,
    // Fastify's default Ajv removes properties that additionalProperties: false forbids, instead of refusing them.
    preValidation: async (request) => {
      const body = request.body
      if (body === null || typeof body !== 'object' || Array.isArray(body)) return
      const unknown = Object.keys(body).filter((key) => !Object.hasOwn(PublishBody.properties, key))
      if (unknown.length > 0) throw new Errors.VALIDATION('body must NOT have additional properties: ' + unknown.join(', '))
      // Not coerced (Ajv would read "3" as 3 and null as 0, and a null meant as "no version" would then compare).
      const version = (body as { version?: unknown }).version
      if (version !== undefined && typeof version !== 'number') throw new Errors.VALIDATION('body/version must be a whole number')
    },
    schema: {
      summary: 'Publish an event',
      description: 'Stored in the bus (offset assigned) before the answer (201). `id` or `Idempotency-Key` makes a retry within IDEMPOTENCY_TTL return the first result. With `version`, a publish at or below the channel\'s last version is dropped and answered 200 with `stale: true`.',
      tags: ['channels'],
      security: [{ bearer: [] }],
      params: ChannelParams,
      headers: PublishHeaders,
      body: PublishBody,
      response: { 200: PublishReply, 201: PublishReply, ...errors, 409: ErrorBody, 413: ErrorBody }
    }
  }, async (request, reply) => {
    const { channel } = request.params
    const headerKey = request.headers['idempotency-key']
    const { data, event, id, version } = request.body
    if (headerKey !== undefined && id !== undefined && headerKey !== id) throw new Errors.VALIDATION('Idempotency-Key header and body "id" differ')
    const result = await publisher.publish(request.principal!, { channel, data, event, id: id ?? headerKey, version }, 'rest')
    // A stale versioned publish stored nothing: 200, not 201 Created.
    return reply.code(result.stale === true ? 200 : 201).send(result)
  })

  fastify.get('/channels/:channel/events', {
    schema: {
      summary: 'Read history',
      description: 'Events after `since`, oldest first. `truncated` tells when history no longer reaches back to `since`.',
      tags: ['channels'],
      security: [{ bearer: [] }],
      params: ChannelParams,
      querystring: HistoryQuery,
      response: { 200: HistoryReply, ...errors }
    }
  }, async (request, reply) => {
    const { channel } = request.params
    const { since } = request.query
    fastify.authorize(request.principal!, 'subscribe', channel)
    const limit = historyLimit(request.query.limit, config.history.limitMax)
    const ns = namespaces.require(channel)
    sendJsonText(reply, historyJson(channel, since, await bus.history(channel, { since, limit, historyTtlSeconds: ns.historyTtl })))
  })

  fastify.delete('/channels/:channel/events', {
    config: { admission: 'api', rateLimit: false },
    schema: {
      summary: 'Remove a channel\'s history (server API)',
      description: 'Needs an `X-API-Key` of API_KEYS, never a user token. The events are dropped; the channel keeps its offset and epoch, so publishing goes on from them and a resume from before is told `recovered: false` (`history_trimmed`). Live subscribers are not affected.',
      tags: ['server api'],
      security: [{ apiKey: [] }],
      params: ChannelParams,
      response: { 200: HistoryRemovedReply, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 429: ErrorBody, 503: ErrorBody }
    }
  }, async (request) => {
    const { channel } = request.params
    namespaces.require(channel)
    if (bus.removeHistory === undefined) throw new Errors.VALIDATION(`the ${bus.kind} bus cannot remove history`)
    const top = await bus.removeHistory(channel)
    return { channel, offset: top.offset, epoch: top.epoch }
  })

  fastify.get('/whoami', {
    schema: {
      summary: 'Who the token says you are',
      description: 'A cheap authenticated probe: clients use it to tell an unreachable server (no answer) and a refused token (401) from a blocked transport.',
      tags: ['client'],
      security: [{ bearer: [] }],
      response: { 200: WhoAmIReply, 401: ErrorBody }
    }
  }, async (request) => {
    const { sub, subscribe, publish, exp } = request.principal!
    return exp === undefined ? { sub, subscribe, publish } : { sub, subscribe, publish, exp }
  })

  fastify.get('/channels/:channel/presence', {
    schema: {
      summary: 'Who is subscribed',
      description: 'Members (one per token `sub`, with their connections), cluster-wide. Needs `presence` in the channel\'s namespace and subscribe permission.',
      tags: ['presence'],
      security: [{ bearer: [] }],
      params: ChannelParams,
      response: { 200: PresenceReply, ...errors, 404: ErrorBody }
    }
  }, async (request) => {
    const { channel } = request.params
    return { channel, ...await presence.query.members(request.principal!, channel) }
  })

  fastify.get('/channels/:channel/presence/count', {
    schema: {
      summary: 'How many are subscribed',
      description: 'Distinct members and connections, cluster-wide; cheaper than the full list.',
      tags: ['presence'],
      security: [{ bearer: [] }],
      params: ChannelParams,
      response: { 200: PresenceCountReply, ...errors, 404: ErrorBody }
    }
  }, async (request) => {
    const { channel } = request.params
    return { channel, ...await presence.query.count(request.principal!, channel) }
  })
}

export default channelRoutes

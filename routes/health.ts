import type { FastifyPluginAsync } from 'fastify'
import Type from 'typebox'
import { Errors, errorBody } from '../src/errors.js'
import { ErrorBody } from '../src/schemas.js'

const Status = Type.Object({ status: Type.String(), bus: Type.String(), node: Type.String() })

const healthRoutes: FastifyPluginAsync = async (fastify) => {
  const { heraldBus: bus, heraldNodeId: node, heraldSessions: sessions, heraldMetrics: metrics } = fastify

  fastify.get('/healthz', {
    schema: { summary: 'Liveness: the process is up', tags: ['operations'], response: { 200: Status } }
  }, async () => ({ status: 'ok', bus: bus.kind, node }))

  fastify.get('/readyz', {
    schema: { summary: 'Readiness: the bus is reachable and the node is not draining', tags: ['operations'], response: { 200: Status, 503: ErrorBody } }
  }, async (_request, reply) => {
    if (sessions.draining) return reply.code(503).send(errorBody(new Errors.DRAINING()))
    if (!bus.ready()) return reply.code(503).send(errorBody(new Errors.BUS_UNAVAILABLE('not connected')))
    return { status: 'ready', bus: bus.kind, node }
  })

  fastify.get('/metrics', {
    schema: { summary: 'Prometheus metrics', tags: ['operations'], produces: ['text/plain'], response: { 200: Type.String() } }
  }, async (_request, reply) => {
    reply.type(metrics.registry.contentType)
    return await metrics.registry.metrics()
  })
}

export default healthRoutes

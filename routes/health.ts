import type { FastifyPluginAsync } from 'fastify'
import Type from 'typebox'
import { Errors, errorBody } from '../src/errors.js'

const Status = Type.Object({ status: Type.String(), bus: Type.String(), node: Type.String() })
const ErrorBody = Type.Object({ statusCode: Type.Integer(), code: Type.String(), error: Type.String(), message: Type.String() })

const healthRoutes: FastifyPluginAsync = async (fastify) => {
  const ctx = fastify.herald

  fastify.get('/healthz', {
    schema: { summary: 'Liveness: the process is up', tags: ['operations'], response: { 200: Status } }
  }, async () => ({ status: 'ok', bus: ctx.broker.kind, node: ctx.nodeId }))

  fastify.get('/readyz', {
    schema: { summary: 'Readiness: the bus is reachable and the node is not draining', tags: ['operations'], response: { 200: Status, 503: ErrorBody } }
  }, async (_request, reply) => {
    if (ctx.draining) return reply.code(503).send(errorBody(new Errors.DRAINING()))
    if (!ctx.broker.ready()) return reply.code(503).send(errorBody(new Errors.BUS_UNAVAILABLE('not connected')))
    return { status: 'ready', bus: ctx.broker.kind, node: ctx.nodeId }
  })

  fastify.get('/metrics', {
    schema: { summary: 'Prometheus metrics', tags: ['operations'], produces: ['text/plain'], response: { 200: Type.String() } }
  }, async (_request, reply) => {
    reply.type(ctx.metrics.registry.contentType)
    return await ctx.metrics.registry.metrics()
  })
}

export default healthRoutes

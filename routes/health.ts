import type { FastifyPluginAsync } from 'fastify'
import Type from 'typebox'
import { Errors, errorBody } from '../src/errors.js'
import { ErrorBody } from '../src/schemas.js'

const Status = Type.Object({
  status: Type.String(),
  bus: Type.String(),
  node: Type.String({ description: 'Id of the node that answered' }),
  pid: Type.Integer({ description: 'Its process id' }),
  worker: Type.Optional(Type.Integer({ minimum: 1, description: 'With WORKERS: which worker answered (1…N, kept across restarts)' }))
})

const healthRoutes: FastifyPluginAsync = async (fastify) => {
  const { heraldBus: bus, heraldNodeId: node, heraldSessions: sessions, heraldMetrics: metrics, heraldWorker: worker } = fastify
  const who = worker === undefined ? { node, pid: process.pid } : { node, pid: process.pid, worker: worker.index }

  fastify.get('/healthz', {
    schema: { summary: 'Liveness: the process is up', tags: ['operations'], response: { 200: Status } }
  }, async () => ({ status: 'ok', bus: bus.kind, ...who }))

  fastify.get('/readyz', {
    schema: { summary: 'Readiness: the bus is reachable and the node is not draining', tags: ['operations'], response: { 200: Status, 503: ErrorBody } }
  }, async (_request, reply) => {
    if (sessions.draining) return reply.code(503).send(errorBody(new Errors.DRAINING()))
    if (!bus.ready()) return reply.code(503).send(errorBody(new Errors.BUS_UNAVAILABLE('not connected')))
    return { status: 'ready', bus: bus.kind, ...who }
  })

  fastify.get('/metrics', {
    schema: { summary: 'Prometheus metrics (with WORKERS: of every worker, summed; herald_node_info names each)', tags: ['operations'], produces: ['text/plain'], response: { 200: Type.String() } }
  }, async (_request, reply) => {
    reply.type(metrics.registry.contentType)
    if (worker !== undefined) reply.header('x-herald-worker', String(worker.index))
    return worker === undefined ? await metrics.registry.metrics() : await worker.metrics()
  })
}

export default healthRoutes

import fp from 'fastify-plugin'
import { Metrics } from '../metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Prometheus instruments of this instance (served at /metrics). */
    heraldMetrics: Metrics
  }
}

export default fp(async function metricsPlugin (fastify, opts: { defaultMetrics?: boolean }) {
  fastify.decorate('heraldMetrics', new Metrics(opts.defaultMetrics ?? true, { node: fastify.heraldNodeId, worker: fastify.heraldWorker?.index }))
}, { name: 'herald-metrics' })

import fp from 'fastify-plugin'
import type { HeraldConfig } from '../config.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The resolved settings of this Herald instance. */
    heraldConfig: HeraldConfig
    /** Identity of this node in connection ids, logs and /healthz. */
    heraldNodeId: string
    /** Set when this node is one of the WORKERS of a standalone server (src/workers.ts). */
    heraldWorker: HeraldWorker | undefined
  }
}

/** A worker of the standalone server: its slot number, and the whole group's metrics (aggregated by the primary). */
export interface HeraldWorker { index: number, metrics: () => Promise<string> }

export default fp(async function configPlugin (fastify, opts: { config: HeraldConfig, nodeId: string, worker?: HeraldWorker }) {
  fastify.decorate('heraldConfig', opts.config)
  fastify.decorate('heraldNodeId', opts.nodeId)
  fastify.decorate('heraldWorker', opts.worker)
}, { name: 'herald-config' })

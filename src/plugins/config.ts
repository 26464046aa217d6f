import fp from 'fastify-plugin'
import type { HeraldConfig } from '../config.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The resolved settings of this Herald instance. */
    heraldConfig: HeraldConfig
    /** Identity of this node in connection ids, logs and /healthz. */
    heraldNodeId: string
  }
}

export default fp(async function configPlugin (fastify, opts: { config: HeraldConfig, nodeId: string }) {
  fastify.decorate('heraldConfig', opts.config)
  fastify.decorate('heraldNodeId', opts.nodeId)
}, { name: 'herald-config' })

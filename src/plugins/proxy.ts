import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { ProxyHooks } from '../proxy/hooks.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The application's proxy hooks (PROXY_*_URL; docs/proxy.md). */
    heraldProxy: ProxyHooks
  }
}

export default fp(async function proxyPlugin (fastify) {
  fastify.decorate('heraldProxy', new ProxyHooks(fastify.heraldConfig.proxy, fastify.heraldMetrics.registry, fastify.log as unknown as Logger))
}, { name: 'herald-proxy', dependencies: ['herald-config', 'herald-metrics'] })

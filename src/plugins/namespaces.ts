import fp from 'fastify-plugin'
import { Namespaces, loadNamespacesFile } from '../namespaces.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-namespace options of every channel. */
    heraldNamespaces: Namespaces
  }
}

export default fp(async function namespacesPlugin (fastify) {
  const config = fastify.heraldConfig
  const file = config.namespaces ?? (config.namespacesFile !== undefined ? loadNamespacesFile(config.namespacesFile) : {})
  fastify.decorate('heraldNamespaces', new Namespaces(file, { historySize: config.history.size, historyTtl: config.history.ttlSeconds }))
}, { name: 'herald-namespaces', dependencies: ['herald-config'] })

import fp from 'fastify-plugin'
import { Namespaces, loadNamespacesFile } from '../namespaces.js'
import { ConfigError } from '../errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-namespace options of every channel. */
    heraldNamespaces: Namespaces
  }
}

export default fp(async function namespacesPlugin (fastify) {
  const config = fastify.heraldConfig
  const file = config.namespaces ?? (config.namespacesFile !== undefined ? loadNamespacesFile(config.namespacesFile) : {})
  const namespaces = new Namespaces(file, { historySize: config.history.size, historyTtl: config.history.ttlSeconds })
  // A namespace that asks a hook nobody answers would refuse every subscribe or publish: refuse to start instead.
  const missing: string[] = []
  if (namespaces.any('subscribeProxy') && config.proxy.subscribeUrl === undefined) missing.push('a namespace has subscribeProxy but PROXY_SUBSCRIBE_URL is not set')
  if (namespaces.any('publishProxy') && config.proxy.publishUrl === undefined) missing.push('a namespace has publishProxy but PROXY_PUBLISH_URL is not set')
  if (missing.length > 0) throw new ConfigError(missing)
  fastify.decorate('heraldNamespaces', namespaces)
}, { name: 'herald-namespaces', dependencies: ['herald-config'] })

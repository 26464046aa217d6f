import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { Hub } from '../hub/hub.js'
import { Publisher } from '../hub/publish.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Channel -> local subscribers: ordering, resume, lazy bus subscriptions. */
    heraldHub: Hub
    /** The one way an event is published (REST and WebSocket alike). */
    heraldPublisher: Publisher
  }
}

export default fp(async function hubPlugin (fastify) {
  const { heraldBus: broker, heraldNamespaces: namespaces, heraldMetrics: metrics } = fastify
  const hub = new Hub({
    broker,
    log: fastify.log as unknown as Logger,
    namespaces,
    presence: fastify.heraldPresence.tracker,
    observer: metrics.hubObserver,
    positionCheckMs: fastify.heraldConfig.positionCheckSeconds * 1000
  })
  metrics.collectFrom({ channels: () => hub.channelCount, subscriptions: () => hub.subscriptionCount })
  fastify.decorate('heraldHub', hub)
  fastify.decorate('heraldPublisher', new Publisher({ broker, namespaces, metrics, proxy: fastify.heraldProxy }))
  fastify.addHook('onClose', async () => { hub.close() })
}, { name: 'herald-hub', dependencies: ['herald-config', 'herald-bus', 'herald-namespaces', 'herald-presence', 'herald-metrics', 'herald-proxy'] })

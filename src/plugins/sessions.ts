import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { Sessions } from '../session/sessions.js'
import { PollSessions } from '../transports/poll-sessions.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The connections of this node: admission, opening, drain. */
    heraldSessions: Sessions
    /** Long-poll sessions by the cursor they answered with. */
    heraldPolls: PollSessions
  }
}

export default fp(async function sessionsPlugin (fastify) {
  const config = fastify.heraldConfig
  const metrics = fastify.heraldMetrics
  const sessions = new Sessions(
    {
      hub: fastify.heraldHub,
      namespaces: fastify.heraldNamespaces,
      metrics,
      log: fastify.log as unknown as Logger,
      maxBufferBytes: config.maxBufferBytes,
      maxSubscriptions: config.maxSubscriptions,
      proxy: fastify.heraldProxy
    },
    {
      publisher: fastify.heraldPublisher,
      presence: fastify.heraldPresence.query,
      verifyToken: fastify.verifyToken,
      metrics,
      limits: { frameRate: config.limits.wsRate, frameBurst: config.limits.wsBurst, maxFrameBytes: config.maxFrameBytes, acceptBinary: config.ws.acceptBinary }
    },
    {
      maxConnections: config.limits.maxConnections,
      maxConnectionsPerSub: config.limits.maxConnectionsPerSub,
      connectRate: config.limits.connectRate,
      connectBurst: config.limits.connectBurst,
      origins: config.corsOrigins
    },
    fastify.heraldNodeId
  )
  metrics.collectFrom({
    connections: (transport) => sessions.registry.count(transport),
    outboxBytes: () => sessions.registry.outboxBytes(),
    // What /readyz answers (routes/health.ts).
    ready: () => !sessions.draining && fastify.heraldBus.ready()
  })
  fastify.decorate('heraldSessions', sessions)
  fastify.decorate('heraldPolls', new PollSessions(sessions, {
    lingerMs: config.pollLingerSeconds * 1000,
    delivered: metrics.delivered,
    maxSessions: config.limits.maxConnections,
    maxSessionsPerSub: config.limits.maxConnectionsPerSub
  }))
  fastify.addHook('onClose', async () => { sessions.drain() })
}, { name: 'herald-sessions', dependencies: ['herald-config', 'herald-bus', 'herald-hub', 'herald-auth', 'herald-presence', 'herald-metrics'] })

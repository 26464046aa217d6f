import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { LocalActions } from '../control/actions.js'
import { ControlPlane } from '../control/plane.js'
import { version } from '../version.js'
import { LATENCY_BUCKETS } from '../metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The server API's commands: sent to every node over the bus, carried out by each on its own connections. */
    heraldControl: { plane: ControlPlane, actions: LocalActions }
  }
}

/** How long a server API command waits for every node that received it to answer. */
export const CONTROL_TIMEOUT_MS = 3000

export default fp(async function controlPlugin (fastify) {
  const log = fastify.log as unknown as Logger
  const { heraldBus: broker, heraldSessions: sessions, heraldRevocations: revocations } = fastify
  const actions = new LocalActions({
    registry: sessions.registry,
    hub: fastify.heraldHub,
    revocations: revocations.list,
    delivered: fastify.heraldMetrics.delivered,
    latency: { bounds: LATENCY_BUCKETS, counts: async () => await fastify.heraldMetrics.latencyBuckets() },
    events: fastify.heraldMetrics.events,
    pollSessions: () => fastify.heraldPolls.size,
    draining: () => sessions.draining,
    node: { id: fastify.heraldNodeId, version, bus: broker.kind, worker: fastify.heraldWorker?.index }
  })
  const plane = new ControlPlane({
    broker,
    nodeId: fastify.heraldNodeId,
    execute: async (cmd) => await actions.execute(cmd),
    missed: () => { void revocations.sync().catch((err) => log.warn({ err: (err as Error).message }, 'revocations: sync after a bus reconnect failed')) },
    log,
    timeoutMs: CONTROL_TIMEOUT_MS
  })
  fastify.decorate('heraldControl', { plane, actions })
  fastify.addHook('onClose', async () => { plane.close(); actions.close() })
  await plane.start()
  // Listening now: read the revocations once more, so that none added since the first read slips by.
  await revocations.sync()
}, { name: 'herald-control', dependencies: ['herald-config', 'herald-bus', 'herald-hub', 'herald-revocations', 'herald-sessions', 'herald-metrics'] })

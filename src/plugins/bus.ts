import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { Broker } from '../bus/broker.js'
import { createBroker } from '../bus/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The event bus: offsets, history, fan-out between nodes. */
    heraldBus: Broker
  }
}

/** The bus the options give (its owner closes it), or the one the config names (opened and closed here). */
export default fp(async function busPlugin (fastify, opts: { broker?: Broker }) {
  const broker = opts.broker ?? createBroker(fastify.heraldConfig, fastify.log as unknown as Logger)
  fastify.decorate('heraldBus', broker)
  fastify.heraldMetrics.collectFrom({ busUp: () => broker.ready() })
  if (opts.broker !== undefined) return
  await broker.connect()
  fastify.addHook('onClose', async () => { await broker.close() })
}, { name: 'herald-bus', dependencies: ['herald-config', 'herald-metrics'] })

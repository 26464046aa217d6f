import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { Broker } from '../bus/broker.js'
import { MemoryRevocations, Revocations, type RevocationStore } from '../control/revocations.js'
import { RedisRevocations } from '../control/revocations-redis.js'
import { redisTargetOf } from '../redis/connection.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Tokens revoked through the server API, as this node knows them (checked on every authentication). */
    heraldRevocations: Revocations
  }
}

/** How often a node checks the store for revocations it missed (a control message lost without a sign). */
const SYNC_MS = 10_000

/** Instances sharing one in-process bus (tests, a host with several) share its revocations too. */
const memoryStores = new WeakMap<Broker, MemoryRevocations>()

/**
 * Revocations are kept beside the bus: in Redis when the bus is Redis (every node, and every node started later,
 * reads the same set), in this process otherwise. Loaded before the node takes any request.
 */
export default fp(async function revocationsPlugin (fastify) {
  const config = fastify.heraldConfig
  const broker = fastify.heraldBus
  const log = fastify.log as unknown as Logger
  const target = redisTargetOf(config)
  let store: RevocationStore
  if (target !== undefined && broker.kind.startsWith('redis')) {
    store = new RedisRevocations({ target, prefix: config.redisPrefix, max: config.api.revokeMax, log })
  } else {
    store = memoryStores.get(broker) ?? new MemoryRevocations(config.api.revokeMax)
    memoryStores.set(broker, store as MemoryRevocations)
  }
  const revocations = new Revocations(store, { log, syncMs: SYNC_MS })
  fastify.decorate('heraldRevocations', revocations)
  await revocations.start()
  fastify.addHook('onClose', async () => { await revocations.close() })
}, { name: 'herald-revocations', dependencies: ['herald-config', 'herald-bus'] })

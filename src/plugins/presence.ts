import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { PresenceStore } from '../presence/presence.js'
import { MemoryPresence } from '../presence/presence-memory.js'
import { RedisPresence } from '../presence/presence-redis.js'
import { PresenceTracker } from '../presence/tracker.js'
import { PresenceQuery } from '../presence/query.js'
import { redisTargetOf } from '../redis/connection.js'

declare module 'fastify' {
  interface FastifyInstance {
    heraldPresence: {
      /** This node's side of presence; absent when no namespace enables presence. */
      tracker?: PresenceTracker
      /** Who is in a channel (REST and the WebSocket `presence` frame). */
      query: PresenceQuery
    }
  }
}

/**
 * Presence, started only when some namespace enables it: in Redis when there is one (every node sees every
 * member), in this process otherwise. A store given in the options is used as it is (its owner closes it).
 */
export default fp(async function presencePlugin (fastify, opts: { store?: PresenceStore }) {
  const config = fastify.heraldConfig
  const namespaces = fastify.heraldNamespaces
  const owned = opts.store === undefined && namespaces.anyPresence
  const log = fastify.log as unknown as Logger
  const target = redisTargetOf(config)
  const store = opts.store ?? (!owned
    ? undefined
    : target !== undefined
      ? new RedisPresence({ target, prefix: config.redisPrefix, ttlSeconds: config.presence.ttlSeconds, log })
      : new MemoryPresence())
  const tracker = store === undefined
    ? undefined
    : new PresenceTracker({ store, namespaces, log, ttlSeconds: config.presence.ttlSeconds, batchMs: config.presence.batchMs })
  fastify.decorate('heraldPresence', { tracker, query: new PresenceQuery(tracker, namespaces) })
  if (owned) await store!.connect()
  fastify.addHook('onClose', async () => {
    tracker?.close()
    if (owned) await store!.close()
  })
}, { name: 'herald-presence', dependencies: ['herald-config', 'herald-namespaces'] })

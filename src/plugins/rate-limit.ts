import fp from 'fastify-plugin'
import fastifyRateLimit from '@fastify/rate-limit'
import type { Logger } from 'pino'
import { commandClient, redisTargetOf } from '../redis/connection.js'
import { syncedRedisStore } from '../redis/rate-limit-store.js'
import { Errors } from '../errors.js'

/**
 * REST rate limits, per token subject (or IP before authentication), for the routes of the scope it is registered
 * in (a route opts out with `config: { rateLimit: false }`). With Redis, counts are shared by every node: synced
 * every RATE_LIMIT_SYNC_MS, or (0) one round trip per request.
 */
export default fp(async function rateLimitPlugin (fastify) {
  const config = fastify.heraldConfig
  let closing = false
  const target = redisTargetOf(config)
  const redis = target === undefined ? undefined : commandClient(target, 'herald-ratelimit', fastify.log as unknown as Logger, () => closing, { commandTimeout: 1000 })
  await redis?.connect()
  let store
  if (redis !== undefined && config.limits.restSyncMs > 0) {
    const synced = syncedRedisStore(redis, config.redisPrefix + ':rl:', config.limits.restSyncMs)
    store = synced.Store
    fastify.addHook('onClose', async () => { synced.close() })
  }
  fastify.addHook('onClose', async () => { closing = true; redis?.disconnect() })
  await fastify.register(fastifyRateLimit, {
    hook: 'preHandler',
    max: config.limits.restMax,
    timeWindow: config.limits.restWindowSeconds * 1000,
    keyGenerator: (request) => request.principal?.sub !== undefined ? 'sub:' + request.principal.sub : 'ip:' + request.ip,
    ...(redis === undefined ? {} : store === undefined ? { redis } : { store }),
    nameSpace: config.redisPrefix + ':rl:',
    skipOnError: true,
    errorResponseBuilder: (_request, context) => new Errors.RATE_LIMITED(context.after)
  })
}, { name: 'herald-rate-limit', dependencies: ['herald-config'] })

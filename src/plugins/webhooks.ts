import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { redisTargetOf } from '../redis/connection.js'
import { MemoryWebhookStore } from '../webhooks/store-memory.js'
import { RedisWebhookStore } from '../webhooks/store-redis.js'
import type { WebhookStore } from '../webhooks/webhook.js'
import { Webhooks } from '../webhooks/webhooks.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Channel and user state webhooks; absent without WEBHOOK_URL. */
    heraldWebhooks?: Webhooks
  }
}

/**
 * Channel and user state webhooks, on when WEBHOOK_URL is set: the hub reports channel occupancy, the session
 * registry subjects' sessions. The store is in Redis when Redis is the bus (cluster-wide, surviving a node), in
 * this process otherwise.
 */
export default fp(async function webhooksPlugin (fastify) {
  const config = fastify.heraldConfig
  const { url, secret, debounceMs, timeoutMs, maxAttempts, queueMax } = config.webhooks
  if (url === undefined || secret === undefined) return
  const log = (fastify.log as unknown as Logger).child({ component: 'webhooks' })
  const ttlMs = config.presence.ttlSeconds * 1000
  const target = redisTargetOf(config)
  const store: WebhookStore = target !== undefined
    ? new RedisWebhookStore({ target, prefix: config.redisPrefix, ttlMs, debounceMs, queueMax, log })
    : new MemoryWebhookStore({ debounceMs, queueMax })
  const metrics = fastify.heraldMetrics
  let queued = 0
  metrics.collectFrom({ webhooksQueued: () => queued })
  const webhooks = new Webhooks({
    store,
    nodeId: fastify.heraldNodeId,
    log,
    url,
    secret,
    timeoutMs,
    maxAttempts,
    ttlMs,
    count: (type, result) => { metrics.webhooks.inc({ type, result }) },
    length: (n) => { queued = n }
  })
  fastify.decorate('heraldWebhooks', webhooks)
  fastify.heraldHub.setOccupancyListener((channel, occupied) => { webhooks.channel(channel, occupied) })
  fastify.heraldSessions.registry.setSubjectListener((sub, online) => { webhooks.user(sub, online) })
  await store.connect()
  webhooks.start()
  fastify.addHook('onClose', async () => {
    await webhooks.close()
    await store.close()
  })
}, { name: 'herald-webhooks', dependencies: ['herald-config', 'herald-metrics', 'herald-hub', 'herald-sessions'] })

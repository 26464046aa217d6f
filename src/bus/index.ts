import type { Logger } from 'pino'
import type { HeraldConfig } from '../config.js'
import type { Broker } from './broker.js'
import { MemoryBroker } from './broker-memory.js'
import { RedisBroker } from './broker-redis.js'
import { redisTargetOf } from '../redis/connection.js'

export type { Broker, Publication, PublishRequest, PublishResult, HistoryResult } from './broker.js'
export { MemoryBroker, RedisBroker }

/** The Redis bus when Redis is configured (one instance or a cluster), otherwise the embedded in-process bus. */
export function createBroker (config: HeraldConfig, log: Logger): Broker {
  const options = { history: config.history, idempotencyTtlSeconds: config.idempotencyTtlSeconds }
  const target = redisTargetOf(config)
  if (target !== undefined) return new RedisBroker({ ...options, target, prefix: config.redisPrefix, wait: config.redisWait, log })
  return new MemoryBroker({ ...options, maxBytes: config.history.maxBytes })
}

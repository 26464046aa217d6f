import type { Logger } from 'pino'
import type { HeraldConfig } from '../config.js'
import type { Broker } from './broker.js'
import { MemoryBroker } from './broker-memory.js'
import { RedisBroker } from './broker-redis.js'

export type { Broker, Publication, PublishRequest, PublishResult, HistoryResult } from './broker.js'
export { MemoryBroker, RedisBroker }

/** The Redis bus when `redisUrl` is set, otherwise the embedded in-process bus. */
export function createBroker (config: HeraldConfig, log: Logger): Broker {
  const options = { history: config.history, idempotencyTtlSeconds: config.idempotencyTtlSeconds }
  if (config.redisUrl !== undefined) return new RedisBroker({ ...options, url: config.redisUrl, prefix: config.redisPrefix, log })
  return new MemoryBroker({ ...options, maxBytes: config.history.maxBytes })
}

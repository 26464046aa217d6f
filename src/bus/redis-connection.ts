import type { RedisOptions } from 'ioredis'
import { Errors, isHeraldError } from '../errors.js'

/**
 * Options of every Herald Redis connection. No offline queue and no per-request retries: a command during an
 * outage fails at once (a publish answers 503 instead of hanging and never succeeds falsely later). Reconnection
 * backs off exponentially to 2 s, until `closing()` says the owner is shutting down.
 */
export function redisOptions (connectionName: string, closing: () => boolean, extra: RedisOptions = {}): RedisOptions {
  return {
    connectionName,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 5000,
    retryStrategy: (times) => closing() ? null : Math.min(50 * 2 ** Math.min(times, 6), 2000),
    ...extra
  }
}

/** Runs a Redis call, turning a connection failure into HERALD_ERR_BUS_UNAVAILABLE. */
export async function busCall<T> (fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (isHeraldError(err)) throw err
    throw new Errors.BUS_UNAVAILABLE((err as Error).message)
  }
}

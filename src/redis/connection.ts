import { Cluster, Redis, type RedisOptions } from 'ioredis'
import type { Logger } from 'pino'
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

/** Where Herald's Redis is: one instance (REDIS_URL) or a Redis Cluster, by its seed nodes (REDIS_CLUSTER). */
export type RedisTarget = { url: string } | { cluster: string[] }

/** The Redis the config names, if any. */
export function redisTargetOf (config: { redisUrl?: string, redisCluster?: string[] }): RedisTarget | undefined {
  if (config.redisCluster !== undefined) return { cluster: config.redisCluster }
  if (config.redisUrl !== undefined) return { url: config.redisUrl }
  return undefined
}

/** Redis for commands and scripts: a client of the one instance, or of the cluster (routing each key to its slot's master). */
export type CommandClient = Redis | Cluster

/**
 * A command client for `target`. A cluster client follows MOVED and ASK, refreshes its slot map every few seconds
 * and retries a command briefly while a failover is under way; like the single-instance one it queues nothing
 * while it is disconnected (a publish answers 503 at once rather than succeed late).
 */
export function commandClient (target: RedisTarget, name: string, log: Logger, closing: () => boolean, extra: RedisOptions = {}): CommandClient {
  const client = 'url' in target
    ? new Redis(target.url, redisOptions(name, closing, extra))
    : new Cluster(target.cluster.map(seed), {
      lazyConnect: true,
      enableOfflineQueue: false,
      scaleReads: 'master',
      // The ready check (CLUSTER INFO) would go out before the node connections are up and, with no offline
      // queue, fail the first connect: the slot map read is check enough.
      enableReadyCheck: false,
      slotsRefreshInterval: 5000,
      slotsRefreshTimeout: 2000,
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      retryDelayOnTryAgain: 100,
      maxRedirections: 16,
      clusterRetryStrategy: (times) => closing() ? null : Math.min(100 * 2 ** Math.min(times, 5), 2000),
      redisOptions: { ...redisOptions(name, closing, extra), lazyConnect: false }
    })
  client.on('error', (err: Error) => log.warn({ err: err.message, conn: name }, 'redis connection error'))
  if (client instanceof Cluster) client.on('node error', (err: Error, node: string) => log.warn({ err: err.message, node, conn: name }, 'redis cluster node error'))
  return client
}

function seed (hostPort: string): { host: string, port: number } {
  const at = hostPort.lastIndexOf(':')
  return { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) }
}

/** Closes a command client: QUIT, then cut what did not close. */
export async function closeClient (client: CommandClient): Promise<void> {
  await client.quit().catch(() => {})
  client.disconnect()
}

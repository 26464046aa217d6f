import { Redis, type RedisOptions } from 'ioredis'
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

/**
 * The two connections every Redis-backed service keeps: `cmd` for commands and scripts, and `sub`, in subscriber
 * mode, for pub/sub. Errors are logged (at warn) rather than thrown: ioredis reconnects by itself, and a command
 * during an outage fails at once (see redisOptions). Both have a command timeout: a Redis that hangs (SIGSTOP, a
 * long script) must not leave a subscribe waiting forever — the client gets an error, and asks again.
 */
export class RedisPair {
  readonly cmd: Redis
  readonly sub: Redis
  private closing = false

  constructor (url: string, name: string, log: Logger, extra: { cmd?: RedisOptions, sub?: RedisOptions } = {}) {
    const closing = (): boolean => this.closing
    this.cmd = new Redis(url, redisOptions(name, closing, extra.cmd))
    this.sub = new Redis(url, redisOptions(name + '-sub', closing, { autoResubscribe: false, ...extra.sub }))
    for (const [conn, role] of [[this.cmd, 'cmd'], [this.sub, 'sub']] as const) {
      conn.on('error', (err: Error) => log.warn({ err: err.message, conn: name + ':' + role }, 'redis connection error'))
    }
  }

  async connect (): Promise<void> { await Promise.all([this.cmd.connect(), this.sub.connect()]) }

  ready (): boolean { return this.cmd.status === 'ready' && this.sub.status === 'ready' }

  async close (): Promise<void> {
    this.closing = true
    await Promise.allSettled([this.cmd.quit(), this.sub.quit()])
    this.cmd.disconnect()
    this.sub.disconnect()
  }
}

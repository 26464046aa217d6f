import type { Cluster, Redis } from 'ioredis'
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit'

/**
 * A @fastify/rate-limit store whose counts are shared by every node through Redis without a Redis round trip
 * per request.
 *
 * Each node counts its own requests at once (so one node alone limits exactly), and every `syncMs`
 * (RATE_LIMIT_SYNC_MS) adds what it counted to the shared counter in one pipelined call, learning in the answer
 * what the other nodes counted. A request is measured against (shared count this node last learned + counted
 * here since). A key this node has not synced within the interval (new, or quiet) is synced on the next turn of
 * the event loop. So across nodes a caller can get past the limit by what a node admits before that answer
 * arrives, and by at most one interval of that node's traffic while it is busy. Windows are fixed and owned by
 * Redis (the key's PEXPIRE, set by whichever node creates it), as in the plugin's own Redis store.
 * RATE_LIMIT_SYNC_MS=0 uses the plugin's exact Redis store instead (one round trip per request).
 *
 * When Redis cannot be reached the node keeps limiting on its own counts (the plugin's skipOnError would let
 * everything through; counting locally is the safer degradation), and sends them once Redis is back.
 */

interface Entry {
  /** The shared count as Redis last answered it (it includes everything this node had sent by then). */
  known: number
  /** Counted here, not yet sent. */
  pending: number
  /** Sent, not yet answered. */
  inflight: number
  /** When the window ends (ms since the epoch). */
  resetAt: number
  windowMs: number
  /** When Redis last answered for this key (0: never). */
  syncedAt: number
}

export interface RateLimitResult { current: number, ttl: number }
type Callback = (err: Error | null, result?: RateLimitResult) => void

const MAX_KEYS = 50_000

// KEYS[1] counter; ARGV[1] increment, ARGV[2] window ms. Returns {count, pttl}.
const SYNC_LUA = `
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {n, ttl}`

/** The sync script, as a command of the client (defined below). */
interface RateSync { heraldRateSync: (key: string, increment: number, windowMs: number) => Promise<[number, number]> }

/** Shared by the store and its per-route children: one table of counts, one sync timer. */
class Counts {
  readonly entries = new Map<string, Entry>()
  private timer?: NodeJS.Timeout
  /** A sync is due on the next turn of the event loop. */
  private soon = false
  private closed = false

  private readonly redis: (Redis | Cluster) & RateSync

  constructor (redis: Redis | Cluster, private readonly syncMs: number) {
    if (typeof (redis as unknown as Record<string, unknown>).heraldRateSync !== 'function') {
      redis.defineCommand('heraldRateSync', { numberOfKeys: 1, lua: SYNC_LUA })
    }
    this.redis = redis as (Redis | Cluster) & RateSync
  }

  incr (key: string, windowMs: number, now: number): Entry {
    let entry = this.entries.get(key)
    if (entry === undefined || now >= entry.resetAt) {
      if (entry !== undefined) this.entries.delete(key)
      if (this.entries.size >= MAX_KEYS) this.sweep(now)
      entry = { known: 0, pending: 0, inflight: 0, resetAt: now + windowMs, windowMs, syncedAt: 0 }
      this.entries.set(key, entry)
    }
    entry.pending++
    // What this node knows of a key it has not heard about lately is old: ask now rather than after an interval.
    this.schedule(now - entry.syncedAt > this.syncMs)
    return entry
  }

  close (): void {
    this.closed = true
    clearTimeout(this.timer)
  }

  private schedule (soon = false): void {
    if (this.closed) return
    if (soon && !this.soon) {
      this.soon = true
      clearTimeout(this.timer)
      this.timer = undefined
      setImmediate(() => { this.soon = false; this.sync() })
      return
    }
    if (this.timer === undefined && !this.soon) this.timer = setTimeout(() => this.sync(), this.syncMs).unref()
  }

  /** Forgets finished windows; past the key bound, the oldest keys too. */
  private sweep (now: number): void {
    for (const [key, e] of this.entries) if (now >= e.resetAt && e.pending === 0 && e.inflight === 0) this.entries.delete(key)
    for (const key of this.entries.keys()) {
      if (this.entries.size < MAX_KEYS) break
      this.entries.delete(key)
    }
  }

  private sync (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.closed) return
    if (this.redis.status !== 'ready') {
      // Keep counting locally; pending counts go to Redis once it is back.
      if (this.entries.size > 0) this.schedule()
      return
    }
    // One call per key, issued together (ioredis batches them; on a cluster each goes to its key's master).
    const sent: Array<[Entry, number]> = []
    const calls: Array<Promise<[number, number]>> = []
    for (const [key, entry] of this.entries) {
      if (entry.pending === 0) continue
      const n = entry.pending
      entry.pending = 0
      entry.inflight += n
      sent.push([entry, n])
      calls.push(this.redis.heraldRateSync(key, n, entry.windowMs))
    }
    if (sent.length === 0) return
    Promise.allSettled(calls).then((results) => {
      const now = Date.now()
      results.forEach((result, i) => {
        const [entry, n] = sent[i]
        entry.inflight -= n
        const reply = result.status === 'fulfilled' ? result.value : undefined
        if (!Array.isArray(reply)) { entry.pending += n; return }
        const [count, ttl] = reply as [number, number]
        // The window may have ended in Redis (and a new one begun) before this node's own clock says so.
        entry.known = count
        entry.resetAt = now + Math.max(0, Number(ttl))
        entry.syncedAt = now
      })
      this.sweep(now)
    }, () => {
      for (const [entry, n] of sent) { entry.inflight -= n; entry.pending += n }
      this.schedule()
    })
  }
}

/** The store class @fastify/rate-limit instantiates (its `store` option), and `close` to stop the sync timer. */
export function syncedRedisStore (redis: Redis | Cluster, prefix: string, syncMs: number): { Store: FastifyRateLimitStoreCtor, close: () => void } {
  const counts = new Counts(redis, syncMs)
  class SyncedRedisStore implements FastifyRateLimitStore {
    constructor (_options?: unknown, private readonly key = prefix) {}

    incr (id: string, cb: Callback, timeWindow: number): void {
      const now = Date.now()
      const entry = counts.incr(this.key + id, timeWindow, now)
      cb(null, { current: entry.known + entry.inflight + entry.pending, ttl: Math.max(0, entry.resetAt - now) })
    }

    read (id: string, cb: Callback): void {
      const now = Date.now()
      const entry = counts.entries.get(this.key + id)
      if (entry === undefined || now >= entry.resetAt) { cb(null, { current: 0, ttl: 0 }); return }
      cb(null, { current: entry.known + entry.inflight + entry.pending, ttl: entry.resetAt - now })
    }

    // Per-route limits get their own counters, keyed as the plugin's Redis store keys them.
    child (routeOptions: Parameters<FastifyRateLimitStore['child']>[0]): SyncedRedisStore {
      const { routeInfo } = routeOptions as unknown as { routeInfo: { method: string, url: string } }
      return new SyncedRedisStore(undefined, `${this.key}${routeInfo.method}${routeInfo.url}-`)
    }
  }
  return { Store: SyncedRedisStore, close: () => counts.close() }
}

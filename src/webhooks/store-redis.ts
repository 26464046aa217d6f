import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { busCall, closeClient, commandClient, type CommandClient, type RedisTarget } from '../redis/connection.js'
import type { StoreOptions } from './store-memory.js'
import type { StateChange, SweepResult, UpdateResult, WebhookJob, WebhookStore, WebhookType } from './webhook.js'
import { CLAIM, REMOVE, RETIRE, RETRY, SWEEP, UPDATE } from './redis-scripts.js'

type Script = (...args: Array<string | number>) => Promise<unknown>
type WithScripts = CommandClient & { whUpdate: Script, whSweep: Script, whRetire: Script, whClaim: Script, whRemove: Script, whRetry: Script }

/** Keys a sweep may release from reaped members per call (the rest on the next, at once). */
const SWEEP_BUDGET = 500
/** Tokens a report accepts as its member's last (the last acknowledged one and those of unanswered reports since). */
const MAX_TOKENS = 16

/**
 * The head of the ids a script call gives its jobs (the queue's sequence number is the tail): random per call, so
 * ids stay unique even when Redis restarts empty and its sequence starts again.
 */
const idBase = (): string => randomBytes(6).toString('hex')

export interface RedisWebhookStoreOptions extends StoreOptions {
  target: RedisTarget
  prefix: string
  /** A member's liveness deadline is this far after its last call (PRESENCE_TTL). */
  ttlMs: number
  log: Logger
}

/**
 * The webhook store in Redis (the scripts and key layout: redis-scripts.ts), shared by every node of the bus: a
 * transition is decided and its webhook queued in one script, so it happens once cluster-wide, and the queue
 * outlives any node.
 */
export class RedisWebhookStore implements WebhookStore {
  readonly kind: 'redis' | 'redis-cluster'
  private readonly cmd: WithScripts
  /** The key prefix carrying the hash tag; every key of the store starts with it. */
  private readonly p: string
  private readonly nodes: string
  private closing = false
  /**
   * What the store may hold as `tokensOf`'s last report's token: the last one Redis acknowledged, and those of
   * reports sent since without an answer (applied or not, who knows). Bounded: past it, an unanswered report that
   * did apply makes the member look forgotten, which costs a rejoin, never a lost transition.
   */
  private tokens: string[] = []
  private tokensOf = ''

  constructor (private readonly options: RedisWebhookStoreOptions) {
    this.kind = 'url' in options.target ? 'redis' : 'redis-cluster'
    this.cmd = commandClient(options.target, 'herald-webhooks', options.log, () => this.closing) as WithScripts
    this.p = `{${options.prefix}:wh}:`
    this.nodes = this.p + 'nodes'
    for (const [name, lua] of [['whUpdate', UPDATE], ['whSweep', SWEEP], ['whRetire', RETIRE], ['whClaim', CLAIM], ['whRemove', REMOVE], ['whRetry', RETRY]]) {
      this.cmd.defineCommand(name, { numberOfKeys: 1, lua })
    }
  }

  async connect (): Promise<void> { await this.cmd.connect() }

  async close (): Promise<void> {
    this.closing = true
    await closeClient(this.cmd)
  }

  async update (member: string, known: boolean, changes: StateChange[], now: number): Promise<UpdateResult> {
    if (member !== this.tokensOf) { this.tokens = []; this.tokensOf = member }
    // The id base is this report's token too. It is accepted as the last one as well: the cluster client may send
    // a report again when its connection closed under it, after the first send was applied.
    const token = idBase()
    const args: Array<string | number> = [this.p, now, member, now + this.options.ttlMs, known ? 1 : 0, this.options.debounceMs, this.options.queueMax, token, [...this.tokens, token].join(',')]
    for (const { key, up } of changes) args.push(key, up ? 1 : 0)
    let reply: [number, number, number, number | string, ...WebhookType[]]
    try {
      reply = await busCall(() => this.cmd.whUpdate(this.nodes, ...args)) as typeof reply
    } catch (err) {
      this.tokens.push(token)
      if (this.tokens.length > MAX_TOKENS) this.tokens.shift()
      throw err
    }
    const [forgotten, enqueued, length, dueAt, ...dropped] = reply
    if (forgotten !== 1) this.tokens = [token]
    return { forgotten: forgotten === 1, enqueued, length, dropped, dueAt: Number(dueAt) < 0 ? undefined : Number(dueAt) }
  }

  async sweep (now: number): Promise<SweepResult> {
    const [enqueued, length, nextDue, more, ...dropped] = await busCall(() => this.cmd.whSweep(this.nodes, this.p, now, this.options.debounceMs, this.options.queueMax, idBase(), SWEEP_BUDGET)) as [number, number, number | string, number, ...WebhookType[]]
    return { enqueued, length, dropped, nextDue: Number(nextDue) < 0 ? undefined : Number(nextDue), more: more === 1 }
  }

  async retire (member: string): Promise<void> { await busCall(() => this.cmd.whRetire(this.nodes, this.p, member)) }

  async claim (n: number, now: number, hiddenUntil: number): Promise<{ jobs: WebhookJob[], length: number }> {
    const [length, ...claimed] = await busCall(() => this.cmd.whClaim(this.nodes, this.p, n, now, hiddenUntil)) as [number, ...string[]]
    const jobs = claimed.map((json) => {
      const { a, ...fields } = JSON.parse(json) as Omit<WebhookJob, 'attempts'> & { a: number }
      return { ...fields, attempts: a }
    })
    return { jobs, length }
  }

  async ack (id: string): Promise<void> { await this.remove(id) }

  async retry (id: string, at: number): Promise<void> { await busCall(() => this.cmd.whRetry(this.nodes, this.p, id, at)) }

  async remove (id: string): Promise<void> { await busCall(() => this.cmd.whRemove(this.nodes, this.p, id)) }
}

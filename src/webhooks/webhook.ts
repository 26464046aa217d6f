import { createHmac } from 'node:crypto'

/** What a webhook reports: a channel gained its first or lost its last subscriber, a user their first or last session. */
export type WebhookType = 'channel.occupied' | 'channel.vacated' | 'user.online' | 'user.offline'

export const WEBHOOK_TYPES: readonly WebhookType[] = ['channel.occupied', 'channel.vacated', 'user.online', 'user.offline']

/** A queued webhook: its body's fields, and how many deliveries have been tried (counted when claimed). */
export interface WebhookJob {
  id: string
  type: WebhookType
  /** When the transition was announced (ms since the epoch). */
  ts: number
  channel?: string
  sub?: string
  attempts: number
}

/**
 * A state key: `c:<channel>` or `u:<sub>`. The store tracks which nodes hold each key and what was last announced
 * for it; the prefix names the pair of webhook types it can produce.
 */
export type StateKey = string

export const channelKey = (channel: string): StateKey => 'c:' + channel
export const userKey = (sub: string): StateKey => 'u:' + sub

/** This node's side of a key changed: `up` when it got its first local holder, not `up` when it lost its last. */
export interface StateChange { key: StateKey, up: boolean }

/** What a store call announced: webhooks queued, those pushed out of a full queue (by type), the queue's length. */
export interface Announced {
  enqueued: number
  dropped: WebhookType[]
  length: number
}

export interface UpdateResult extends Announced {
  /**
   * The store no longer knew this member (it was reaped after missing its liveness deadline, or Redis lost its data),
   * or no longer has its last report (a failover to a replica that had not received it; the member is then retired):
   * nothing was applied. The node must come back as a new member with every key it holds.
   */
  forgotten: boolean
  /** The earliest debounce check this call scheduled (ms since the epoch), if any. */
  dueAt?: number
}

export interface SweepResult extends Announced {
  /** The next debounce check still waiting (ms since the epoch), if any. */
  nextDue?: number
  /** The sweep stopped at its budget: call again. */
  more: boolean
}

/**
 * Cluster-wide state of channels and users, and the queue of webhooks it announces. The store is the single
 * place where a transition is decided, atomically with queueing its webhook, so several nodes reporting the same
 * channel produce one `channel.occupied`, and a key that empties produces one `vacated`/`offline` only if it is
 * still empty `debounceMs` later (any node's sweep makes that check; the one that scheduled it sets a timer).
 *
 * Nodes take part as *members*: a member id names one node incarnation, whose liveness deadline every call renews.
 * A member that misses it (a crashed or stalled node) is reaped by any node's sweep: its keys are released as if it
 * had reported them empty. A node that learns it was forgotten (`UpdateResult.forgotten`: reaped, or its last
 * report lost by the store) comes back under a new member id with everything it holds, so a late reaper never
 * removes what the node re-reported.
 *
 * Queue semantics: at least once. `claim` hides a job for a visibility timeout and counts an attempt; `ack`
 * removes it, `retry` makes it visible again at a time, `remove` gives it up. A claim not followed by either (the
 * claiming node died) makes the job visible again when its visibility timeout ends, to any node. The queue holds
 * at most `queueMax` jobs; the oldest are dropped to make room (and reported in `Announced.dropped`).
 */
export interface WebhookStore {
  readonly kind: 'memory' | 'redis' | 'redis-cluster'
  connect: () => Promise<void>
  close: () => Promise<void>
  /** Applies `member`'s changes, in order, and renews its liveness (no changes: a heartbeat). `known`: the member registered before. */
  update: (member: string, known: boolean, changes: StateChange[], now: number) => Promise<UpdateResult>
  /** Reaps members past their deadline and runs the debounce checks that are due. */
  sweep: (now: number) => Promise<SweepResult>
  /** A node leaving for good: its member is reaped by the next sweep (anyone's). */
  retire: (member: string) => Promise<void>
  /** Up to `n` jobs visible at `now`, each hidden until `hiddenUntil` and with its attempt counted; and the queue's length. */
  claim: (n: number, now: number, hiddenUntil: number) => Promise<{ jobs: WebhookJob[], length: number }>
  ack: (id: string) => Promise<void>
  /** Makes a claimed job visible again at `at` (no effect if it is gone). */
  retry: (id: string, at: number) => Promise<void>
  remove: (id: string) => Promise<void>
}

/** The type a transition of `key` announces. */
export function typeOf (key: StateKey, up: boolean): WebhookType {
  if (key.startsWith('c:')) return up ? 'channel.occupied' : 'channel.vacated'
  return up ? 'user.online' : 'user.offline'
}

/**
 * The raw body of a webhook. Built by one function from the job's fields, so every retry sends the same bytes
 * (and the same signature) for the same `id`.
 */
export function bodyOf (job: WebhookJob): string {
  const body: Record<string, unknown> = { id: job.id, type: job.type, ts: job.ts }
  if (job.channel !== undefined) body.channel = job.channel
  if (job.sub !== undefined) body.sub = job.sub
  return JSON.stringify(body)
}

/** `X-Herald-Signature`'s value: `sha256=` and the hex HMAC-SHA256 of the raw body with WEBHOOK_SECRET. */
export function signatureOf (body: string, secret: string): string {
  return 'sha256=' + createHmac('sha256', secret).update(body).digest('hex')
}

/** Wait before the next try after `attempts` failed ones: 1 s doubling, at most 5 minutes. */
export function backoffMs (attempts: number): number {
  return Math.min(1000 * 2 ** Math.max(0, Math.min(attempts - 1, 20)), 300_000)
}

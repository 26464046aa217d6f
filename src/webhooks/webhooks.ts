import type { Logger } from 'pino'
import { Delivery, type DeliveryResult } from './delivery.js'
import { StateTracker } from './tracker.js'
import { channelKey, userKey, type Announced, type WebhookStore, type WebhookType } from './webhook.js'

export interface WebhooksOptions {
  store: WebhookStore
  nodeId: string
  log: Logger
  url: string
  secret: string
  timeoutMs: number
  maxAttempts: number
  /** A node not heard from for this long is taken for dead and its channels and users released (PRESENCE_TTL). */
  ttlMs: number
  /** How often a node looks at the store for work it was not told about (sweeps, other nodes' jobs). */
  pollMs?: number
  count: (type: WebhookType, result: DeliveryResult) => void
  length: (n: number) => void
}

/**
 * Channel and user state webhooks (docs/webhooks.md): this node's channel occupancy and sessions by subject go to
 * the store, which decides the cluster-wide transitions and queues their webhooks; every node delivers from the
 * queue. The two entry points are what the hub and the session registry call, on their own thread of work: they
 * only record the change.
 */
export class Webhooks {
  private readonly tracker: StateTracker
  private readonly delivery: Delivery

  constructor (options: WebhooksOptions) {
    const pollMs = options.pollMs ?? 1000
    this.delivery = new Delivery({ ...options, pollMs })
    this.tracker = new StateTracker({
      store: options.store,
      nodeId: options.nodeId,
      log: options.log,
      heartbeatMs: Math.max(100, Math.floor(options.ttlMs / 3)),
      sweepMs: pollMs,
      announced: (result) => this.announced(result, options)
    })
  }

  start (): void {
    this.tracker.start()
    this.delivery.start()
  }

  /** A channel got its first local subscriber (`occupied`) or lost its last. */
  channel (name: string, occupied: boolean): void { this.tracker.change(channelKey(name), occupied) }

  /** A subject got its first session on this node (`online`) or its last ended. */
  user (sub: string, online: boolean): void {
    if (sub !== '') this.tracker.change(userKey(sub), online)
  }

  async close (): Promise<void> {
    await Promise.all([this.tracker.close(), this.delivery.close()])
  }

  private announced (result: Announced, options: WebhooksOptions): void {
    options.length(result.length)
    for (const type of result.dropped) options.count(type, 'dropped')
    if (result.dropped.length > 0) options.log.warn({ dropped: result.dropped.length }, 'webhook queue full (WEBHOOK_QUEUE_MAX): the oldest were dropped')
    if (result.enqueued > 0) this.delivery.kick()
  }
}

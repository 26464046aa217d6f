import type { Broker, PublishResult } from '../bus/broker.js'
import type { Metrics } from '../metrics.js'
import type { Namespaces } from '../namespaces.js'
import { type Principal, can } from '../auth/permissions.js'
import { Errors } from '../errors.js'

export interface PublishInput { channel: string, data: unknown, event?: string, id?: string }

/** Where a publish came from: a backend over REST or the server API (a broadcast), or a client over its WebSocket. */
export type PublishSource = 'rest' | 'websocket' | 'api'

/**
 * The one way an event is published, whoever publishes it: the principal's permission, the channel's namespace
 * (its history bounds; whether clients may publish there), then the bus, which stores it and assigns its offset.
 */
export class Publisher {
  constructor (private readonly deps: { broker: Broker, namespaces: Namespaces, metrics: Metrics }) {}

  /** Checks at once (throwing the HERALD_ERR_* to answer with), then resolves once the bus has stored the event. */
  publish (principal: Principal, input: PublishInput, source: PublishSource): Promise<PublishResult> {
    const { channel, data, event, id } = input
    if (!can(principal, 'publish', channel)) throw new Errors.FORBIDDEN('publish', channel)
    const ns = this.deps.namespaces.require(channel)
    if (source === 'websocket' && !ns.clientPublish) throw new Errors.PUBLISH_DISABLED(channel)
    return this.deps.broker.publish({ channel, data, event, idempotencyKey: id, historySize: ns.historySize, historyTtlSeconds: ns.historyTtl }).then((result) => {
      if (!result.duplicate) this.deps.metrics.published.inc({ transport: source })
      return result
    })
  }
}

import type { Broker, PublishResult } from '../bus/broker.js'
import type { Metrics } from '../metrics.js'
import type { NamespaceOptions, Namespaces } from '../namespaces.js'
import type { ProxyHooks } from '../proxy/hooks.js'
import { type Principal, can } from '../auth/permissions.js'
import { Errors } from '../errors.js'

export interface PublishInput { channel: string, data: unknown, event?: string, id?: string, version?: number }

/** Where a publish came from: a backend over REST or the server API (a broadcast), or a client over its WebSocket. */
export type PublishSource = 'rest' | 'websocket' | 'api'

/**
 * The one way an event is published, whoever publishes it: the principal's permission, the channel's namespace
 * (its history bounds; whether clients may publish there), then the bus, which stores it and assigns its offset.
 */
export class Publisher {
  constructor (private readonly deps: { broker: Broker, namespaces: Namespaces, metrics: Metrics, proxy?: ProxyHooks }) {}

  /**
   * Checks at once (throwing the HERALD_ERR_* to answer with), then resolves once the bus has stored the event. A
   * client's publish in a namespace with `publishProxy` is decided by the application's publish hook instead of the
   * token's patterns, and publishes the `data` it answers, if any, instead of the client's (docs/proxy.md).
   */
  publish (principal: Principal, input: PublishInput, source: PublishSource): Promise<PublishResult> {
    const { channel, data, event, id, version } = input
    const hook = source === 'websocket' && this.deps.namespaces.of(channel)?.publishProxy === true && this.deps.proxy !== undefined
    if (!hook && !can(principal, 'publish', channel)) throw new Errors.FORBIDDEN('publish', channel)
    const ns = this.deps.namespaces.require(channel)
    if (source === 'websocket' && !ns.clientPublish) throw new Errors.PUBLISH_DISABLED(channel)
    if (hook) {
      return this.deps.proxy!.call('publish', { sub: principal.sub, channel, data, event, info: principal.info })
        .then(async (answer) => await this.store(ns, { channel, data: answer.data === undefined ? data : answer.data, event, id, version }, source))
    }
    return this.store(ns, input, source)
  }

  private store (ns: NamespaceOptions, { channel, data, event, id, version }: PublishInput, source: PublishSource): Promise<PublishResult> {
    return this.deps.broker.publish({ channel, data, event, idempotencyKey: id, version, historySize: ns.historySize, historyTtlSeconds: ns.historyTtl }).then((result) => {
      if (!result.duplicate && result.stale !== true) this.deps.metrics.published.inc({ transport: source })
      return result
    })
  }
}

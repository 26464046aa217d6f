import type { Logger } from 'pino'
import type { HeraldConfig } from './config.js'
import type { Broker } from './bus/broker.js'
import type { Hub } from './hub/hub.js'
import type { Connections } from './hub/connections.js'
import type { Metrics } from './metrics.js'
import type { NamespaceOptions, Namespaces } from './namespaces.js'
import type { PresenceTracker } from './presence/tracker.js'
import type { Principal } from './auth/permissions.js'

/** What every transport needs, built once per Herald instance (see plugins/herald.ts). */
export interface HeraldContext {
  readonly nodeId: string
  readonly config: HeraldConfig
  readonly broker: Broker
  readonly hub: Hub
  readonly connections: Connections
  readonly metrics: Metrics
  readonly log: Logger
  readonly namespaces: Namespaces
  /** Present when some namespace enables presence. */
  readonly presence?: PresenceTracker
  /** The options of a channel's namespace; throws HERALD_ERR_UNKNOWN_NAMESPACE when its namespace is refused. */
  channelOptions: (channel: string) => NamespaceOptions
  /** Verifies a bare token (WebSocket `refresh` frame); set once the auth plugin is registered. */
  verifyToken: (token: string) => Promise<Principal>
  /** True once shutdown began: readyz fails, new connections are refused, existing ones are ended. */
  draining: boolean
}

import type { TransportName } from '../protocol/transports.js'

/*
 * What the server API's node and connection listings answer, without dependencies: the admin console (client/admin)
 * imports these types too, so the two cannot disagree.
 */

/** One node, as `GET /v1/api/nodes` lists it. */
export interface NodeInfo {
  node: string
  version: string
  /** Seconds since this node started. */
  uptime: number
  bus: string
  worker?: number
  draining: boolean
  connections: Record<TransportName, number>
  /** Long-poll sessions kept between polls (their waiting polls are the long-poll connections). */
  pollSessions: number
  channels: number
  subscriptions: number
  /** Events written to clients per second, over about the last DELIVERY_WINDOW_MS. */
  deliveriesPerSecond: number
  /** Publish-to-deliver latency percentiles (milliseconds) over the same window, from herald_delivery_latency_seconds; null without deliveries in it. */
  latencyP50: number | null
  latencyP99: number | null
  revocations: number
}

/** One connection of a subject on one node, as `GET /v1/api/connections` lists it (the route adds the node). */
export interface ConnectionInfo {
  /** The connection's id (`client` of its `connected` frame; a long-poll session's id). */
  client: string
  transport: TransportName
  /** When it was opened, milliseconds since 1970. */
  since: number
  subscriptions: number
  /** Outbound bytes queued for it. */
  buffered: number
}

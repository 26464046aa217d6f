import Type, { type TSchema } from 'typebox'
import { Channel, EventName, FrameId, Position } from '../protocol/client-frames.js'
import { TRANSPORTS } from '../protocol/transports.js'
import { Errors } from '../errors.js'

/** TypeBox schemas of the server API (routes/v1/api.ts; docs/server-api.md). */

/** Most channels one broadcast may name. */
export const BROADCAST_MAX = 1000
/** Most channels `GET /v1/api/channels` lists (default 1000). */
export const CHANNELS_LIMIT_MAX = 10_000
/** The longest close reason a WebSocket close frame can carry, in bytes. */
export const MAX_REASON_BYTES = 123

const Sub = Type.String({ minLength: 1, maxLength: 256, description: 'A token subject (`sub` claim)' })
const ClientId = Type.String({ minLength: 1, maxLength: 128, description: 'One connection: the `client` of its `connected` frame' })

export const BroadcastBody = Type.Object({
  channels: Type.Array(Channel, { minItems: 1, maxItems: BROADCAST_MAX, uniqueItems: true, description: `Channels to publish to (at most ${BROADCAST_MAX}, no repeats)` }),
  data: Type.Unknown({ description: 'Any JSON value' }),
  event: Type.Optional(EventName),
  id: Type.Optional(FrameId)
}, { additionalProperties: false, required: ['channels', 'data'] })

const ErrorInfo = Type.Object({ code: Type.String({ description: 'HERALD_ERR_* (docs/errors.md)' }), message: Type.String() })

export const BroadcastReply = Type.Object({
  results: Type.Array(Type.Object({
    channel: Type.String(),
    offset: Type.Optional(Type.Integer({ minimum: 1 })),
    epoch: Type.Optional(Type.String()),
    duplicate: Type.Optional(Type.Boolean({ description: 'The id had been used on this channel: this is the first publish\'s result' })),
    error: Type.Optional(ErrorInfo)
  }), { description: 'One per channel, in the order asked: its offset and epoch, or why it was not published' })
})

/** How far a command reached: the nodes the bus delivered it to, and those that answered within the time allowed. */
const Reach = {
  expected: Type.Integer({ description: 'Nodes that received the command' }),
  answered: Type.Integer({ description: 'Nodes that answered in time (fewer than `expected`: some may still have acted)' })
}

const NodeErrors = Type.Optional(Type.Array(Type.Object({
  node: Type.String(),
  client: Type.Optional(Type.String()),
  code: Type.String(),
  message: Type.String()
}), { description: 'Connections (or nodes) that could not do it, and why (at most 20 per node)' }))

export const DisconnectBody = Type.Object({
  sub: Sub,
  client: Type.Optional(ClientId),
  code: Type.Optional(Type.Integer({ minimum: 3000, maximum: 4999, description: 'Close code (3000–4999; 4000–4499 tell the client to reconnect, 4500–4999 not to). Default 4504: do not reconnect with this token' })),
  reason: Type.Optional(Type.String({ maxLength: MAX_REASON_BYTES, description: `Told to the client (at most ${MAX_REASON_BYTES} bytes of UTF-8)` }))
}, { additionalProperties: false })

export const ClosedReply = Type.Object({ ...Reach, closed: Type.Integer({ description: 'Connections closed' }), errors: NodeErrors })

export const SubscribeBody = Type.Object({
  sub: Sub,
  channel: Channel,
  since: Type.Optional(Position),
  client: Type.Optional(ClientId)
}, { additionalProperties: false })

export const SubscribeReply = Type.Object({
  ...Reach,
  connections: Type.Integer({ description: 'Live connections of the subject (or the one client) found' }),
  subscribed: Type.Integer({ description: 'Connections subscribed now' }),
  already: Type.Integer({ description: 'Connections that were subscribed already' }),
  errors: NodeErrors
})

export const UnsubscribeBody = Type.Object({
  sub: Sub,
  channel: Channel,
  client: Type.Optional(ClientId)
}, { additionalProperties: false })

export const UnsubscribeReply = Type.Object({
  ...Reach,
  connections: Type.Integer(),
  unsubscribed: Type.Integer({ description: 'Connections whose subscription ended' }),
  errors: NodeErrors
})

export const RevokeBody = Type.Object({
  sub: Type.Optional(Sub),
  jti: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'A token id (`jti` claim)' })),
  until: Type.Optional(Type.Integer({ description: 'When the revocation ends, seconds since 1970 (default: now + REVOKE_TTL; at most 366 days ahead)' }))
}, { additionalProperties: false })

export const RevokeReply = Type.Object({
  ...Reach,
  revoked: Type.Object({
    sub: Type.Optional(Type.String()),
    jti: Type.Optional(Type.String()),
    before: Type.Optional(Type.Integer({ description: 'Tokens of the subject with `iat` before this (seconds since 1970), or none, are refused' })),
    until: Type.Integer({ description: 'Refused until then (seconds since 1970)' })
  }),
  closed: Type.Integer({ description: 'Live connections closed (4505)' }),
  errors: NodeErrors
})

export const ChannelsQuery = Type.Object({
  pattern: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.:@*-]{1,256}$', description: 'Only channels matching it (`*` stands for any run of characters, as in token patterns)' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: CHANNELS_LIMIT_MAX, description: `At most this many channels per node (default 1000, at most ${CHANNELS_LIMIT_MAX})` }))
}, { additionalProperties: false })

export const ChannelsReply = Type.Object({
  ...Reach,
  channels: Type.Array(Type.Object({ channel: Type.String(), subscribers: Type.Integer({ description: 'Subscriptions on every node that answered' }) }), { description: 'Sorted by name' }),
  truncated: Type.Boolean({ description: 'Some node had more than `limit` matching channels' }),
  errors: NodeErrors
})

export const NodeInfoSchema = Type.Object({
  node: Type.String(),
  version: Type.String(),
  uptime: Type.Integer({ description: 'Seconds since the node started' }),
  bus: Type.String(),
  worker: Type.Optional(Type.Integer()),
  draining: Type.Boolean(),
  connections: Type.Object({ websocket: Type.Integer(), sse: Type.Integer(), 'long-poll': Type.Integer() }, { description: `Open connections by transport (${TRANSPORTS.join(', ')}; long-poll: waiting polls)` }),
  pollSessions: Type.Integer({ description: 'Long-poll sessions kept between polls' }),
  channels: Type.Integer({ description: 'Channels with subscribers on this node' }),
  subscriptions: Type.Integer(),
  deliveriesPerSecond: Type.Number({ description: 'Events written to clients per second, over about the last 10 s' }),
  latencyP50: Type.Union([Type.Number(), Type.Null()], { description: 'Publish-to-deliver latency, median, in milliseconds, over the same window (from herald_delivery_latency_seconds, interpolated within its buckets); null without deliveries in it' }),
  latencyP99: Type.Union([Type.Number(), Type.Null()], { description: '99th percentile of the same, in milliseconds; at most the top bucket bound (2500)' }),
  revocations: Type.Integer({ description: 'Revocations in force, as this node knows them' })
})

export const NodesReply = Type.Object({ ...Reach, nodes: Type.Array(NodeInfoSchema, { description: 'Sorted by node id' }), errors: NodeErrors })

export const EventsQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, description: 'At most this many events in all, newest first (default 100; each node keeps its last 200)' }))
}, { additionalProperties: false })

export const NodeEventSchema = Type.Object({
  node: Type.String(),
  ts: Type.Integer({ description: 'When, milliseconds since 1970' }),
  seq: Type.Integer({ description: 'Increasing on its node' }),
  kind: Type.Union([Type.Literal('closed'), Type.Literal('eviction'), Type.Literal('token-expired'), Type.Literal('heartbeat-timeout'), Type.Literal('refused'), Type.Literal('bus-reconnect')], {
    description: 'closed: a connection closed by the server (API disconnect, revocation, drain…); eviction: a slow consumer evicted or a channel dropped; token-expired; heartbeat-timeout: a WebSocket missed a pong; refused: a request or connection answered 429; bus-reconnect'
  }),
  code: Type.Optional(Type.String({ description: 'The close code (`4504`) or error code (`HERALD_ERR_RATE_LIMITED`)' })),
  detail: Type.String({ maxLength: 200, description: 'Who and why (transport, connection id, subject, reason; never a token or a payload)' })
})

export const EventsReply = Type.Object({ ...Reach, events: Type.Array(NodeEventSchema, { description: 'Every node that answered, newest first' }), errors: NodeErrors })

export const ConnectionsQuery = Type.Object({ sub: Sub }, { additionalProperties: false })

export const ConnectionsReply = Type.Object({
  ...Reach,
  connections: Type.Array(Type.Object({
    node: Type.String(),
    client: Type.String({ description: 'The connection\'s id (`client` of its `connected` frame; a long-poll session\'s id): give it to `disconnect` to close only this one' }),
    transport: Type.Union([Type.Literal('websocket'), Type.Literal('sse'), Type.Literal('long-poll')]),
    since: Type.Integer({ description: 'When it was opened, milliseconds since 1970' }),
    subscriptions: Type.Integer(),
    buffered: Type.Integer({ description: 'Outbound bytes queued for it' })
  }), { description: 'Every node that answered, oldest first' }),
  errors: NodeErrors
})

export const ApiPresenceQuery = Type.Object({
  channel: Channel
}, { additionalProperties: false })

export const ApiHistoryQuery = Type.Object({
  channel: Channel,
  since: Type.Integer({ minimum: 0, default: 0, description: 'Return events after this offset' }),
  limit: Type.Optional(Type.Integer({ minimum: 0, description: 'At most this many (default 100, at most HISTORY_LIMIT_MAX); 0 answers just the epoch and offsets' }))
}, { additionalProperties: false })

export const HistoryRemovedReply = Type.Object({
  channel: Type.String(),
  offset: Type.Integer({ description: 'The channel\'s newest offset, kept: publishing goes on from it' }),
  epoch: Type.String()
})

/**
 * A preValidation hook refusing fields a body schema does not name, at any depth of nested objects (Fastify's Ajv
 * would remove them silently; a typo in a field name must not pass for a default).
 */
export function refuseUnknownFields (schema: TSchema): (request: { body: unknown }) => Promise<void> {
  return async (request) => { check(schema, request.body, '') }
}

function check (schema: TSchema, value: unknown, path: string): void {
  const properties = (schema as { properties?: Record<string, TSchema> }).properties
  if (properties === undefined || value === null || typeof value !== 'object' || Array.isArray(value)) return
  const unknown = Object.keys(value).filter((key) => !Object.hasOwn(properties, key))
  if (unknown.length > 0) throw new Errors.VALIDATION(`body${path} must NOT have additional properties: ${unknown.slice(0, 10).join(', ')}`)
  for (const [key, inner] of Object.entries(value)) check(properties[key], inner, path + '.' + key)
}

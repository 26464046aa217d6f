import Type, { type Static, type TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { CHANNEL_PATTERN } from './channel.js'

/**
 * Frames of the WebSocket protocol (docs/protocol.md). Every frame is one JSON object with a `type`.
 * Server frames are also the `data:` of SSE messages and the elements of long-poll `events`.
 */

export const Channel = Type.String({ pattern: CHANNEL_PATTERN, description: 'Channel name: 1–128 of A-Z a-z 0-9 _ - . : @' })
export const FrameId = Type.String({ minLength: 1, maxLength: 128, description: 'Client-chosen id; the frame is answered by an `ack` or `error` with the same id. On `publish` it is also the idempotency key.' })
export const Position = Type.Object({
  offset: Type.Integer({ minimum: 0, description: 'Last offset seen' }),
  epoch: Type.String({ minLength: 1, maxLength: 64, description: 'Epoch that offset belongs to' })
}, { additionalProperties: false })
export const EventName = Type.String({ minLength: 1, maxLength: 128 })

// ---- client -> server ----

export const SubscribeFrame = Type.Object({
  type: Type.Literal('subscribe'),
  channel: Channel,
  since: Type.Optional(Position),
  id: Type.Optional(FrameId)
}, { additionalProperties: false })

export const UnsubscribeFrame = Type.Object({
  type: Type.Literal('unsubscribe'),
  channel: Channel,
  id: Type.Optional(FrameId)
}, { additionalProperties: false })

export const PublishFrame = Type.Object({
  type: Type.Literal('publish'),
  channel: Channel,
  data: Type.Unknown({ description: 'Any JSON value' }),
  event: Type.Optional(EventName),
  id: Type.Optional(FrameId)
}, { additionalProperties: false, required: ['type', 'channel', 'data'] })

export const PingFrame = Type.Object({
  type: Type.Literal('ping'),
  id: Type.Optional(FrameId)
}, { additionalProperties: false })

export const PresenceFrame = Type.Object({
  type: Type.Literal('presence'),
  channel: Channel,
  id: Type.Optional(FrameId)
}, { additionalProperties: false })

export const RefreshFrame = Type.Object({
  type: Type.Literal('refresh'),
  token: Type.String({ minLength: 1, maxLength: 16384, description: 'A new JWT for the same `sub`' }),
  id: Type.Optional(FrameId)
}, { additionalProperties: false })

export const ClientFrames = { subscribe: SubscribeFrame, unsubscribe: UnsubscribeFrame, publish: PublishFrame, ping: PingFrame, presence: PresenceFrame, refresh: RefreshFrame }
export type ClientFrameType = keyof typeof ClientFrames
export type SubscribeFrame = Static<typeof SubscribeFrame>
export type UnsubscribeFrame = Static<typeof UnsubscribeFrame>
export type PublishFrame = Static<typeof PublishFrame>
export type PingFrame = Static<typeof PingFrame>
export type PresenceFrame = Static<typeof PresenceFrame>
export type RefreshFrame = Static<typeof RefreshFrame>
export type ClientFrame = SubscribeFrame | UnsubscribeFrame | PublishFrame | PingFrame | PresenceFrame | RefreshFrame

export const clientFrameCheckers = Object.fromEntries(
  Object.entries(ClientFrames).map(([type, schema]) => [type, Compile(schema as TSchema)])
) as Record<ClientFrameType, ReturnType<typeof Compile>>

// ---- server -> client ----

export const ConnectedFrame = Type.Object({
  type: Type.Literal('connected'),
  client: Type.String({ description: 'Connection id' }),
  sub: Type.String({ description: 'The token subject' }),
  pingInterval: Type.Integer({ description: 'Seconds between server pings; a client may treat twice this much silence as a dead connection' })
})

export const SubscribedFrame = Type.Object({
  type: Type.Literal('subscribed'),
  channel: Channel,
  offset: Type.Integer({ description: 'Position the subscription continues from' }),
  epoch: Type.String(),
  recovered: Type.Optional(Type.Boolean({ description: 'Present when the subscribe had `since`: true if every event after it follows' })),
  reason: Type.Optional(Type.Union([Type.Literal('epoch_changed'), Type.Literal('history_trimmed'), Type.Literal('offset_ahead')])),
  replayed: Type.Integer({ description: 'Events replayed from history right after this frame' })
})

export const UnsubscribedFrame = Type.Object({
  type: Type.Literal('unsubscribed'),
  channel: Channel,
  reason: Type.Optional(Type.String({ description: '`client` when asked for; otherwise why the server ended it (e.g. `insufficient_state`: resubscribe with your last position)' })),
  resubscribe: Type.Optional(Type.Boolean({ description: 'True when the client should subscribe again with `since` = its last position' }))
})

export const EventFrame = Type.Object({
  type: Type.Literal('event'),
  channel: Channel,
  offset: Type.Integer({ minimum: 1 }),
  epoch: Type.String(),
  ts: Type.Integer({ description: 'Publish time, ms since 1970' }),
  event: Type.Optional(EventName),
  data: Type.Unknown()
})

export const AckFrame = Type.Object({
  type: Type.Literal('ack'),
  id: FrameId,
  channel: Type.Optional(Channel),
  offset: Type.Optional(Type.Integer({ description: 'For a publish: the stored offset' })),
  epoch: Type.Optional(Type.String()),
  duplicate: Type.Optional(Type.Boolean({ description: 'For a publish: the id had been used; this is the first result' }))
})

export const ErrorFrame = Type.Object({
  type: Type.Literal('error'),
  code: Type.String({ description: 'A HERALD_ERR_* code (docs/errors.md)' }),
  message: Type.String(),
  id: Type.Optional(FrameId),
  channel: Type.Optional(Channel)
})

export const PongFrame = Type.Object({
  type: Type.Literal('pong'),
  id: Type.Optional(FrameId)
})

const Member = Type.Object({
  sub: Type.String(),
  info: Type.Optional(Type.Unknown()),
  connections: Type.Array(Type.Object({ client: Type.String(), connectedAt: Type.Integer() }))
})

export const PresenceReplyFrame = Type.Object({
  type: Type.Literal('presence'),
  channel: Channel,
  id: Type.Optional(FrameId),
  members: Type.Array(Member, { description: 'One entry per sub (a user with three tabs is one member with three connections)' }),
  count: Type.Object({ members: Type.Integer(), connections: Type.Integer() })
}, { description: 'Answer to a presence request' })

export const PresenceDiffFrame = Type.Object({
  type: Type.Literal('presence_diff'),
  channel: Channel,
  joins: Type.Array(Type.Object({ sub: Type.String(), info: Type.Optional(Type.Unknown()) })),
  leaves: Type.Array(Type.Object({ sub: Type.String() }))
}, { description: 'Members who joined (first connection) or left (last connection) during the last batch window' })

export const PresenceCountFrame = Type.Object({
  type: Type.Literal('presence_count'),
  channel: Channel,
  members: Type.Integer(),
  connections: Type.Integer()
}, { description: 'Counts-only namespaces: sent instead of presence_diff' })

export const DisconnectFrame = Type.Object({
  type: Type.Literal('disconnect'),
  code: Type.Integer({ description: 'A close code of docs/protocol.md' }),
  reason: Type.String(),
  reconnect: Type.Boolean({ description: 'Whether the client should reconnect (and resume)' })
}, { description: 'SSE only: the last message before the server ends the stream' })

export type ServerFrame = Static<typeof ConnectedFrame> | Static<typeof SubscribedFrame> | Static<typeof UnsubscribedFrame> |
Static<typeof EventFrame> | Static<typeof AckFrame> | Static<typeof ErrorFrame> | Static<typeof PongFrame> | Static<typeof DisconnectFrame> |
Static<typeof PresenceReplyFrame> | Static<typeof PresenceDiffFrame> | Static<typeof PresenceCountFrame>

export const ServerFrames = {
  connected: ConnectedFrame,
  subscribed: SubscribedFrame,
  unsubscribed: UnsubscribedFrame,
  event: EventFrame,
  ack: AckFrame,
  error: ErrorFrame,
  pong: PongFrame,
  disconnect: DisconnectFrame,
  presence: PresenceReplyFrame,
  presence_diff: PresenceDiffFrame,
  presence_count: PresenceCountFrame
}

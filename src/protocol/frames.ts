import Type, { type Static } from 'typebox'
import { Channel, EventName, FrameId } from './client-frames.js'
import { shouldReconnect } from './codes.js'

/**
 * Server -> client frames (docs/protocol.md; its tables are checked against these schemas). The same JSON is a
 * WebSocket text frame, the `data:` of an SSE message and an element of a long-poll or history `events` array.
 * The builders at the end are the only way Herald makes a frame; a test validates every frame the test suite
 * receives against these schemas.
 */

/** Why a resume could not be honoured. */
export const RecoveryFailure = Type.Union([Type.Literal('epoch_changed'), Type.Literal('history_trimmed'), Type.Literal('offset_ahead')])
export type RecoveryFailure = Static<typeof RecoveryFailure>

/** An application's own refusal, passed on by a proxy hook (HERALD_ERR_PROXY_REFUSED; docs/proxy.md). */
export const AppError = Type.Object({
  code: Type.String({ description: 'The application\'s error code' }),
  message: Type.Optional(Type.String({ description: 'The application\'s message' }))
}, { description: 'The application\'s own code and message, when a proxy hook refused with one' })

export const ConnectedFrame = Type.Object({
  type: Type.Literal('connected'),
  client: Type.String({ description: 'Connection id' }),
  sub: Type.String({ description: 'The token subject' }),
  pingInterval: Type.Integer({ description: 'Seconds between server pings; a client may treat twice this much silence as a dead connection' }),
  channels: Type.Optional(Type.Array(Channel, { description: 'Channels the server subscribes this connection to now (the token\'s or connect hook\'s `channels`), each confirmed by a `subscribed` frame with `server: true`. A client drops any server-made subscription of an earlier connection that is not listed' }))
})

export const SubscribedFrame = Type.Object({
  type: Type.Literal('subscribed'),
  channel: Channel,
  offset: Type.Integer({ description: 'Position the subscription continues from' }),
  epoch: Type.String(),
  recovered: Type.Optional(Type.Boolean({ description: 'Present when the subscribe had `since`: true if every event after it follows' })),
  reason: Type.Optional(RecoveryFailure),
  replayed: Type.Integer({ description: 'Events replayed from history right after this frame' }),
  server: Type.Optional(Type.Literal(true, { description: 'Present when the server made this subscription (the token\'s or connect hook\'s `channels`, or the server API): the client did not ask for it' })),
  data: Type.Optional(Type.Unknown({ description: 'What the subscribe hook answered as `data` (docs/proxy.md), for this subscriber' })),
  delta: Type.Optional(Type.Literal(true, { description: 'Delta delivery is on for this subscription: live events may carry `delta: true`' }))
})

export const UnsubscribedFrame = Type.Object({
  type: Type.Literal('unsubscribed'),
  channel: Channel,
  reason: Type.Optional(Type.String({ description: '`client` when asked for; `server` when the server API ended it; otherwise why the server ended it (e.g. `insufficient_state`: resubscribe with your last position)' })),
  resubscribe: Type.Optional(Type.Boolean({ description: 'True when the client should subscribe again with `since` = its last position' }))
})

export const EventFrame = Type.Object({
  type: Type.Literal('event'),
  channel: Channel,
  offset: Type.Integer({ minimum: 1 }),
  epoch: Type.String(),
  ts: Type.Integer({ description: 'Publish time, ms since 1970' }),
  event: Type.Optional(EventName),
  delta: Type.Optional(Type.Literal(true, { description: 'Delta delivery: `data` is a JSON Patch (RFC 6902) of the previous event\'s data on this channel, which this subscriber holds' })),
  data: Type.Unknown()
})

export const AckFrame = Type.Object({
  type: Type.Literal('ack'),
  id: FrameId,
  channel: Type.Optional(Channel),
  offset: Type.Optional(Type.Integer({ description: 'For a publish: the stored offset' })),
  epoch: Type.Optional(Type.String()),
  duplicate: Type.Optional(Type.Boolean({ description: 'For a publish: the id had been used; this is the first result' })),
  stale: Type.Optional(Type.Literal(true, { description: 'For a versioned publish: its `version` was at or below the channel\'s last, so it was dropped; offset/epoch are the channel\'s top' })),
  exp: Type.Optional(Type.Integer({ description: 'For a refresh: the new token\'s expiry (seconds since 1970), when it has one' }))
})

export const ErrorFrame = Type.Object({
  type: Type.Literal('error'),
  code: Type.String({ description: 'A HERALD_ERR_* code (docs/errors.md)' }),
  message: Type.String(),
  id: Type.Optional(FrameId),
  channel: Type.Optional(Channel),
  app: Type.Optional(AppError)
})

export const PongFrame = Type.Object({
  type: Type.Literal('pong'),
  id: Type.Optional(FrameId)
})

export const Member = Type.Object({
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

export type ServerFrameType = keyof typeof ServerFrames
type Body<K extends ServerFrameType> = Omit<Static<(typeof ServerFrames)[K]>, 'type'>
type Member = Static<typeof Member>

/** The builders: one per frame type, typed by its schema. */
export const frame = {
  connected: (body: Body<'connected'>): string => JSON.stringify({ type: 'connected', ...body }),
  subscribed: (body: Body<'subscribed'>): string => JSON.stringify({ type: 'subscribed', ...body }),
  unsubscribed: (channel: string, reason: string, resubscribe?: true): string =>
    JSON.stringify(resubscribe === true ? { type: 'unsubscribed', channel, reason, resubscribe } : { type: 'unsubscribed', channel, reason }),
  ack: (id: string, body: Omit<Body<'ack'>, 'id'> = {}): string => JSON.stringify({ type: 'ack', id, ...body }),
  error: (err: { code: string, message: string, app?: unknown }, id?: string, channel?: string): string =>
    JSON.stringify({ type: 'error', code: err.code, message: err.message, id, channel, app: err.app }),
  pong: (id?: string): string => JSON.stringify({ type: 'pong', id }),
  presence: (channel: string, id: string | undefined, body: { members: Member[], count: { members: number, connections: number } }): string =>
    JSON.stringify({ type: 'presence', channel, id, ...body }),
  presenceDiff: (channel: string, joins: Body<'presence_diff'>['joins'], leaves: Body<'presence_diff'>['leaves']): string =>
    JSON.stringify({ type: 'presence_diff', channel, joins, leaves }),
  presenceCount: (channel: string, count: { members: number, connections: number }): string =>
    JSON.stringify({ type: 'presence_count', channel, ...count }),
  /** SSE only: the last message before the stream ends; `reconnect` follows from the code's range. */
  disconnect: (code: number, reason: string): string => JSON.stringify({ type: 'disconnect', code, reason, reconnect: shouldReconnect(code) }),
  /**
   * The `event` frame in two halves, for the hot path: the tail (`,"ts":…,"event"?:…,"data":…}`) does not depend
   * on the offset and is serialised once on the publishing node; the bus prepends the head when it assigns the
   * offset. The Redis bus builds the same head in Lua (bus/broker-redis.ts); the broker contract suite holds the
   * two equal.
   */
  eventHead: (channelJson: string, offset: number, epoch: string): string =>
    '{"type":"event","channel":' + channelJson + ',"offset":' + offset + ',"epoch":"' + epoch + '"',
  eventTail: (ts: number, event: string | undefined, data: unknown): string =>
    ',"ts":' + ts + (event === undefined ? '' : ',"event":' + JSON.stringify(event)) + ',"data":' + JSON.stringify(data) + '}'
}

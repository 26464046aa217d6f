import Type, { type Static, type TProperties, type TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { CHANNEL_DESCRIPTION, CHANNEL_PATTERN } from './channel.js'

/**
 * Client -> server frames of the WebSocket protocol (docs/protocol.md; its tables are checked against these
 * schemas). Every frame is one JSON object with a `type`. Server frames: frames.ts.
 */

export const Channel = Type.String({ pattern: CHANNEL_PATTERN, description: CHANNEL_DESCRIPTION })
export const FrameId = Type.String({ minLength: 1, maxLength: 128, description: 'Client-chosen id; the frame is answered by an `ack` or `error` with the same id. On `publish` it is also the idempotency key.' })
export const Position = Type.Object({
  offset: Type.Integer({ minimum: 0, description: 'Last offset seen' }),
  epoch: Type.String({ minLength: 1, maxLength: 64, description: 'Epoch that offset belongs to' })
}, { additionalProperties: false })
export const EventName = Type.String({ minLength: 1, maxLength: 128 })

/** A client frame: its `type`, its own fields, and the optional `id` every client frame may carry; nothing else. */
function clientFrame<T extends string, P extends TProperties> (type: T, fields: P, required?: string[]) {
  return Type.Object({ type: Type.Literal(type), ...fields, id: Type.Optional(FrameId) }, { additionalProperties: false, ...(required === undefined ? {} : { required }) })
}

export const SubscribeFrame = clientFrame('subscribe', { channel: Channel, since: Type.Optional(Position), delta: Type.Optional(Type.Boolean({ description: 'Ask for delta delivery (namespaces with `delta`): live events after the first carry a JSON Patch of the previous data' })) })
export const UnsubscribeFrame = clientFrame('unsubscribe', { channel: Channel })
/** A value's version (versioned publishes): a whole number JavaScript holds exactly. */
export const Version = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Version of the value this event carries: dropped (answered `stale`) when at or below the channel\'s last version, so a late retry never overwrites a newer value' })

export const PublishFrame = clientFrame('publish', { channel: Channel, data: Type.Unknown({ description: 'Any JSON value' }), event: Type.Optional(EventName), version: Type.Optional(Version) }, ['type', 'channel', 'data'])
export const PingFrame = clientFrame('ping', {})
export const PresenceFrame = clientFrame('presence', { channel: Channel })
export const RefreshFrame = clientFrame('refresh', { token: Type.String({ minLength: 1, maxLength: 16384, description: 'A new JWT for the same `sub`' }) })

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

import type { FastifyReply } from 'fastify'
import type { HistoryResult } from './bus/broker.js'
import { Errors } from './errors.js'
import Type from 'typebox'
import { CHANNEL_DESCRIPTION, CHANNEL_PATTERN } from './protocol/channel.js'
import { EventName, FrameId, Version } from './protocol/client-frames.js'
import { AppError } from './protocol/frames.js'

/** TypeBox schemas of the REST routes (frames live in protocol/frames.ts). */

export const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String({ description: 'HERALD_ERR_* (docs/errors.md)' }),
  error: Type.String(),
  message: Type.String()
}, { description: 'Error' })

/** The 401/403 of a transport's route: the connect hook's refusal may carry the application's own words. */
export const RefusalBody = Type.Object({
  ...ErrorBody.properties,
  app: Type.Optional(AppError)
}, { description: 'Error (with `app` when the application\'s connect hook refused; docs/proxy.md)' })

export const ChannelParams = Type.Object({
  channel: Type.String({ pattern: CHANNEL_PATTERN, description: CHANNEL_DESCRIPTION })
})

export const PublishBody = Type.Object({
  data: Type.Unknown({ description: 'Any JSON value' }),
  event: Type.Optional(EventName),
  id: Type.Optional(FrameId),
  version: Type.Optional(Version)
}, { additionalProperties: false, required: ['data'] })

export const PublishHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'Same as body `id`' }))
})

export const PublishReply = Type.Object({
  channel: Type.String(),
  offset: Type.Integer({ minimum: 1 }),
  epoch: Type.String(),
  duplicate: Type.Boolean({ description: 'True when the idempotency key had been used: this is the first publish\'s result' }),
  stale: Type.Optional(Type.Literal(true, { description: 'A versioned publish at or below the channel\'s last version: dropped (200); offset/epoch are the channel\'s top' }))
})

export const HistoryQuery = Type.Object({
  since: Type.Integer({ minimum: 0, default: 0, description: 'Return events after this offset' }),
  limit: Type.Optional(Type.Integer({ minimum: 0, description: 'At most this many (default 100, at most HISTORY_LIMIT_MAX)' })),
  token: Type.Optional(Type.String())
})

export const EventObject = Type.Object({
  type: Type.Literal('event'),
  channel: Type.String(),
  offset: Type.Integer(),
  epoch: Type.String(),
  ts: Type.Integer(),
  event: Type.Optional(Type.String()),
  data: Type.Unknown()
})

export const HistoryReply = Type.Object({
  channel: Type.String(),
  epoch: Type.String(),
  offset: Type.Integer({ description: 'Newest offset of the channel' }),
  earliest: Type.Integer({ description: 'Oldest offset still in history (offset + 1 when empty)' }),
  truncated: Type.Boolean({ description: 'True when events after `since` are missing because history no longer reaches back' }),
  events: Type.Array(EventObject)
})

export const StreamQuery = Type.Object({
  channel: Type.Optional(Type.Array(Type.String(), { description: 'Channels to subscribe (repeat the parameter); may be left out when the token\'s (or connect hook\'s) `channels` name some' })),
  cursor: Type.Optional(Type.String({ description: 'Resume position from a previous `id:` / `cursor`' })),
  delta: Type.Optional(Type.Array(Type.String(), { description: 'Channels of the stream to get with delta delivery (namespaces with `delta`; repeat the parameter)' })),
  token: Type.Optional(Type.String({ description: 'JWT, for clients that cannot send an Authorization header' }))
})

export const PollQuery = Type.Object({
  channel: Type.Optional(Type.Array(Type.String(), { description: 'Channels to poll (repeat the parameter); may be left out when the token\'s (or connect hook\'s) `channels` name some' })),
  cursor: Type.Optional(Type.String({ description: 'The `cursor` of the previous answer' })),
  timeout: Type.Optional(Type.Number({ minimum: 0, description: 'Seconds to wait for an event (capped at POLL_TIMEOUT_MAX; default 25 or the cap)' })),
  token: Type.Optional(Type.String())
})

export const PollReply = Type.Object({
  events: Type.Array(EventObject),
  cursor: Type.String({ description: 'Send it back with the next poll' }),
  recovery: Type.Optional(Type.Array(Type.Object({
    channel: Type.String(),
    recovered: Type.Literal(false),
    reason: Type.String(),
    offset: Type.Integer(),
    epoch: Type.String()
  }), { description: 'Channels whose cursor position could not be resumed; they continue from `offset`' })),
  subscribed: Type.Optional(Type.Array(Type.Object({
    channel: Type.String(),
    offset: Type.Integer(),
    epoch: Type.String(),
    replayed: Type.Integer(),
    recovered: Type.Optional(Type.Boolean()),
    reason: Type.Optional(Type.String()),
    server: Type.Literal(true)
  }), { description: 'Channels the server subscribed this session to since the last answer: the token\'s or connect hook\'s `channels` (in the first answer of a session), or the server API (docs/server-api.md)' })),
  unsubscribed: Type.Optional(Type.Array(Type.Object({ channel: Type.String(), reason: Type.String() }), { description: 'Subscriptions the server API ended since the last answer' })),
  disconnect: Type.Optional(Type.Object({
    code: Type.Integer({ description: 'A terminal close code (docs/protocol.md): 4504 disconnected (the default of the server API), 4505 token revoked, or a code of the backend' }),
    reason: Type.String(),
    reconnect: Type.Boolean()
  }, { description: 'The session was ended for good: poll no more with this token' }))
})

export const PresenceReply = Type.Object({
  channel: Type.String(),
  members: Type.Array(Type.Object({
    sub: Type.String(),
    info: Type.Optional(Type.Unknown()),
    connections: Type.Array(Type.Object({ client: Type.String(), connectedAt: Type.Integer() }))
  })),
  count: Type.Object({ members: Type.Integer(), connections: Type.Integer() })
})

export const WhoAmIReply = Type.Object({
  sub: Type.String(),
  subscribe: Type.Array(Type.String(), { description: 'Channel patterns the token may subscribe to' }),
  publish: Type.Array(Type.String(), { description: 'Channel patterns the token may publish to' }),
  exp: Type.Optional(Type.Integer({ description: 'Expiry, seconds since 1970' }))
})

export const PresenceCountReply = Type.Object({
  channel: Type.String(),
  members: Type.Integer({ description: 'Distinct subs' }),
  connections: Type.Integer()
})

/**
 * Sends a body that is already JSON text (stored event frames spliced together). Fastify sends a string as it
 * is, without running the response serializer; the route's response schema still documents its shape.
 */
export function sendJsonText (reply: unknown, text: string): void {
  void (reply as FastifyReply).type('application/json; charset=utf-8').send(text)
}

/** A history request's page size: `limit` if given (at most HISTORY_LIMIT_MAX), else 100 or that maximum. */
export function historyLimit (asked: number | undefined, limitMax: number): number {
  if (asked !== undefined && asked > limitMax) throw new Errors.VALIDATION(`limit must be at most ${limitMax}`)
  return asked ?? Math.min(100, limitMax)
}

/**
 * A history page as the JSON text of HistoryReply. The stored frames are already JSON: they are spliced in rather
 * than parsed and re-serialised each.
 */
export function historyJson (channel: string, since: number, { publications, top, earliest }: HistoryResult): string {
  const truncated = since < top.offset && earliest > since + 1
  return '{"channel":' + JSON.stringify(channel) + ',"epoch":' + JSON.stringify(top.epoch) + ',"offset":' + top.offset +
    ',"earliest":' + earliest + ',"truncated":' + truncated + ',"events":[' + publications.map((p) => p.frame).join(',') + ']}'
}

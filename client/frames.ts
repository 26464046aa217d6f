import type { Position } from './cursor.js'

/**
 * The server frames the client reads (docs/protocol.md). The same JSON arrives over WebSocket, as SSE `data:`, and
 * as long-poll `events`. Declared here rather than imported from the server's TypeBox schemas so that the bundle
 * has no dependency; test/client-unit.test.ts checks at compile time that they match src/protocol/frames.ts.
 */
export type RecoveryReason = 'epoch_changed' | 'history_trimmed' | 'offset_ahead'

export interface ConnectedFrame {
  type: 'connected'
  client: string
  sub: string
  pingInterval: number
  /** Channels the server subscribes this connection to now (the token's or connect hook's `channels`). */
  channels?: string[]
}
export interface SubscribedFrame {
  type: 'subscribed'
  channel: string
  offset: number
  epoch: string
  recovered?: boolean
  reason?: RecoveryReason
  replayed: number
  /** The server made this subscription (the token's `channels`, the connect hook, the server API): the client did not ask for it. */
  server?: true
  /** What the application's subscribe hook gave this subscriber. */
  data?: unknown
  /** Delta delivery is on: live events may carry a JSON Patch of the previous data. */
  delta?: true
}
export interface UnsubscribedFrame { type: 'unsubscribed', channel: string, reason?: string, resubscribe?: boolean }
export interface EventFrame { type: 'event', channel: string, offset: number, epoch: string, ts: number, event?: string, delta?: true, data: unknown }
export interface AckFrame { type: 'ack', id: string, channel?: string, offset?: number, epoch?: string, duplicate?: boolean, stale?: true, exp?: number }
export interface ErrorFrame { type: 'error', code: string, message: string, id?: string, channel?: string, app?: { code: string, message?: string } }
export interface PongFrame { type: 'pong', id?: string }
export interface PresenceMember { sub: string, info?: unknown, connections: Array<{ client: string, connectedAt: number }> }
export interface PresenceFrame { type: 'presence', channel: string, id?: string, members: PresenceMember[], count: { members: number, connections: number } }
export interface PresenceDiffFrame { type: 'presence_diff', channel: string, joins: Array<{ sub: string, info?: unknown }>, leaves: Array<{ sub: string }> }
export interface PresenceCountFrame { type: 'presence_count', channel: string, members: number, connections: number }
export interface DisconnectFrame { type: 'disconnect', code: number, reason: string, reconnect: boolean }

export type ServerFrame = ConnectedFrame | SubscribedFrame | UnsubscribedFrame | EventFrame | AckFrame | ErrorFrame |
PongFrame | PresenceFrame | PresenceDiffFrame | PresenceCountFrame | DisconnectFrame

/** A long-poll answer. */
export interface PollAnswer {
  events: EventFrame[]
  cursor: string
  recovery?: Array<{ channel: string, recovered: false, reason: RecoveryReason, offset: number, epoch: string }>
  /** Subscriptions the server gave this long-poll session since the last answer (the token's `channels`, the server API). */
  subscribed?: Array<Omit<SubscribedFrame, 'type'>>
  /** Subscriptions the server API ended since the last answer. */
  unsubscribed?: Array<{ channel: string, reason: string }>
  /** The session was ended for good (a terminal code: the server API disconnected its subject or revoked its token). */
  disconnect?: { code: number, reason: string, reconnect: boolean }
}

/** The client frames the client sends. */
export type ClientFrame =
  | { type: 'subscribe', channel: string, since?: Position, id?: string, delta?: true }
  | { type: 'unsubscribe', channel: string, id?: string }
  | { type: 'publish', channel: string, data: unknown, event?: string, id?: string, version?: number }
  | { type: 'ping', id?: string }
  | { type: 'presence', channel: string, id?: string }
  | { type: 'refresh', token: string, id?: string }

/** Reads one frame; undefined for anything that is not a JSON object with a string `type`. */
export function parseFrame (text: unknown): ServerFrame | undefined {
  if (typeof text !== 'string') return undefined
  try {
    const value: unknown = JSON.parse(text)
    if (value === null || typeof value !== 'object' || typeof (value as { type?: unknown }).type !== 'string') return undefined
    return value as ServerFrame
  } catch {
    return undefined
  }
}

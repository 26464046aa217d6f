/**
 * The Herald client library: `createClient({ url, token | getToken, ... })`. One ESM module without dependencies,
 * for browsers and Node 20+ (pass the `ws` package's class as `WebSocket` where there is no global one).
 * Documentation: docs/client.md.
 */
export { createClient, HeraldClient } from './client.js'
export type { ClientOptions, ClientEvents, PublishOptions, PublishAck, PresenceInfo, HistoryPage } from './client.js'
export { Subscription } from './subscription.js'
export type { SubscriptionEvents, SubscriptionState, HeraldEvent, SubscribedInfo, RecoveryFailed, PresenceJoin, PresenceLeave, PresenceCount } from './subscription.js'
export { HeraldError, ClientErrorCodes } from './errors.js'
export type { ConnectionState, StateChange } from './state.js'
export { ConnectionStateMachine, canTransition } from './state.js'
export { Backoff } from './backoff.js'
export type { BackoffOptions } from './backoff.js'
export { OfflineQueue } from './queue.js'
export type { OfflineQueueOptions, OverflowPolicy } from './queue.js'
export { Reconnector } from './reconnect.js'
export type { RetryInfo, RetryMode } from './reconnect.js'
export { Heartbeat } from './heartbeat.js'
export { CloseCodes, closeAction } from './codes.js'
export type { CloseAction } from './codes.js'
export { encodeCursor, decodeCursor } from './cursor.js'
export type { Position } from './cursor.js'
export { tokenExpiry } from './jwt.js'
export { SseParser } from './sse-parser.js'
export { systemClock } from './clock.js'
export type { Clock, TimerHandle } from './clock.js'
export type { TransportName, WebSocketConstructor, WebSocketLike, FetchLike } from './transports/types.js'
export type { PresenceMember, RecoveryReason } from './frames.js'

/** The client's version (the package's). */
export const version = '0.1.0'

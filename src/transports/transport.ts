import type { Publication } from '../bus/broker.js'
import type { SubscribeResult } from '../hub/sink.js'
import type { TransportName } from '../protocol/transports.js'

/** Deliveries per transport, counted by the transports as events reach clients (Metrics.delivered). */
export type DeliveryCounts = Record<TransportName, number>

/**
 * What differs between WebSocket, SSE and long-poll: how bytes leave and how a connection ends. Everything else —
 * the principal and its expiry, subscriptions and positions, client commands, limits, backpressure, presence,
 * close reasons — is the Session's, whatever the transport (session/session.ts). One adapter per file: ws.ts,
 * sse.ts, long-poll.ts. Every call comes from the session, through its outbox, in the order the client must see.
 */
export interface Transport {
  readonly name: TransportName
  /**
   * Client commands arrive over the connection itself (WebSocket). A one-way transport (SSE, long-poll) gets
   * them by other routes, carries a cursor with its frames, and cannot resubscribe one channel: a channel the
   * session cannot continue ends the whole connection, and the client resumes it from its cursor.
   */
  readonly bidirectional: boolean
  /** Bytes written and not yet sent: what counts against MAX_BUFFER_BYTES. */
  buffered: () => number
  /** One server frame, already serialised (protocol/frames.ts). */
  send: (frame: string) => void
  /** A subscription is ready: `frame` is its `subscribed` frame, sent after the session's cursor moved to it. */
  subscribed: (frame: string, result: SubscribeResult) => void
  /** One event, sent after the session's cursor moved past it (and counted as delivered when it reaches a client). */
  event: (pub: Publication) => void
  /** Ends the connection with a close code of protocol/codes.ts, telling the peer as its transport allows. */
  close: (code: number, reason: string) => void
  /**
   * The server API is about to give the session a subscription of its own. A transport that several clients may
   * share (a long-poll session, joined by whoever polls from its place) stops being shared with other subjects.
   */
  personalise?: () => void
}

/**
 * WebSocket close codes. The range tells a client what to do, as in Centrifugo:
 *  - 1000–3999: standard codes; reconnect with backoff unless the client closed on purpose.
 *  - 4000–4499: Herald asks the client to reconnect (with jitter) and resume from its last offsets.
 *  - 4500–4999: terminal; do not reconnect without changing something (a new token, other permissions).
 * The client library imports this table, so server and client cannot disagree.
 */
export const CloseCodes = {
  /** Normal closure requested by either side. */
  NORMAL: 1000,
  /** The server failed handling this connection's input (a bug): reconnect with backoff; other connections are unaffected. */
  INTERNAL_ERROR: 1011,
  /** The server is restarting or draining: reconnect at once (with jitter), preferably to another node. */
  SERVICE_RESTART: 1012,
  /** The connection's outbound buffer exceeded its bound; reconnect and resume from the last offset. */
  SLOW_CONSUMER: 4001,
  /** No pong within the heartbeat timeout. */
  HEARTBEAT_TIMEOUT: 4002,
  /** The server lost its position on a subscribed stream; reconnect and resume (you may get `recovered: false`). */
  INSUFFICIENT_STATE: 4003,
  /** The client sent too many invalid or too fast frames; back off, then reconnect. */
  POLICY_VIOLATION: 4008,
  /** The token expired during the connection and was not refreshed; get a new token, then reconnect. */
  TOKEN_EXPIRED: 4501,
  /** The token is not valid (any longer); do not reconnect with it. */
  UNAUTHORIZED: 4502,
  /** The token does not allow what the connection needs. */
  FORBIDDEN: 4503,
  /** Disconnected by the application (server API `disconnect`, its default code): do not reconnect with this token. */
  DISCONNECTED: 4504,
  /** The token was revoked (server API `revoke`): do not reconnect with it. */
  TOKEN_REVOKED: 4505,
  /** A frame larger than the hard limit; fix the client. */
  MESSAGE_TOO_BIG: 1009
} as const

export type CloseCode = (typeof CloseCodes)[keyof typeof CloseCodes]

export function shouldReconnect (code: number): boolean {
  if (code >= 4500 && code <= 4999) return false
  return true
}

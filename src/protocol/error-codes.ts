/**
 * Every error Herald answers with: its code, HTTP status and message (`%s` filled in order). The same code travels
 * as `code` in an HTTP JSON error body and in a WebSocket / SSE `error` frame. No dependencies: the client library
 * imports this module too, and docs/errors.md is checked against it by a test.
 */
export const ERROR_TABLE = {
  UNAUTHORIZED: { code: 'HERALD_ERR_UNAUTHORIZED', status: 401, message: 'Missing or invalid token: %s' },
  TOKEN_EXPIRED: { code: 'HERALD_ERR_TOKEN_EXPIRED', status: 401, message: 'Token expired' },
  TOKEN_REVOKED: { code: 'HERALD_ERR_TOKEN_REVOKED', status: 401, message: 'Token revoked (%s)' },
  BAD_API_KEY: { code: 'HERALD_ERR_BAD_API_KEY', status: 401, message: 'Missing or invalid API key: %s' },
  API_DISABLED: { code: 'HERALD_ERR_API_DISABLED', status: 403, message: 'The server API is disabled: no API_KEYS are configured' },
  FORBIDDEN: { code: 'HERALD_ERR_FORBIDDEN', status: 403, message: 'Token does not allow %s on channel %s' },
  BAD_CHANNEL: { code: 'HERALD_ERR_BAD_CHANNEL', status: 400, message: 'Invalid channel name: %s' },
  VALIDATION: { code: 'HERALD_ERR_VALIDATION', status: 400, message: 'Invalid request: %s' },
  MALFORMED_JSON: { code: 'HERALD_ERR_MALFORMED_JSON', status: 400, message: 'Body or frame is not valid JSON' },
  BODY_TOO_LARGE: { code: 'HERALD_ERR_BODY_TOO_LARGE', status: 413, message: 'Body exceeds %s bytes' },
  FRAME_TOO_LARGE: { code: 'HERALD_ERR_FRAME_TOO_LARGE', status: 413, message: 'Frame exceeds %s bytes' },
  UNKNOWN_FRAME: { code: 'HERALD_ERR_UNKNOWN_FRAME', status: 400, message: 'Unknown frame type: %s' },
  BAD_FRAME: { code: 'HERALD_ERR_BAD_FRAME', status: 400, message: 'Invalid %s frame: %s' },
  BAD_CURSOR: { code: 'HERALD_ERR_BAD_CURSOR', status: 400, message: 'Cursor is not valid: %s' },
  TOO_MANY_SUBSCRIPTIONS: { code: 'HERALD_ERR_TOO_MANY_SUBSCRIPTIONS', status: 400, message: 'At most %s subscriptions per connection' },
  CHANNEL_FULL: { code: 'HERALD_ERR_CHANNEL_FULL', status: 409, message: 'Channel %s is full (%s)' },
  UNKNOWN_NAMESPACE: { code: 'HERALD_ERR_UNKNOWN_NAMESPACE', status: 404, message: 'Namespace of channel %s is not configured' },
  PUBLISH_DISABLED: { code: 'HERALD_ERR_PUBLISH_DISABLED', status: 403, message: 'Clients may not publish to channel %s over the WebSocket (namespace option clientPublish)' },
  PRESENCE_DISABLED: { code: 'HERALD_ERR_PRESENCE_DISABLED', status: 404, message: 'Presence is not enabled for channel %s' },
  PRESENCE_COUNTS_ONLY: { code: 'HERALD_ERR_PRESENCE_COUNTS_ONLY', status: 400, message: 'Channel %s keeps presence counts only (namespace option presenceCountsOnly); ask for /presence/count' },
  ALREADY_SUBSCRIBED: { code: 'HERALD_ERR_ALREADY_SUBSCRIBED', status: 409, message: 'Already subscribed to %s' },
  NOT_SUBSCRIBED: { code: 'HERALD_ERR_NOT_SUBSCRIBED', status: 409, message: 'Not subscribed to %s' },
  IDEMPOTENCY_CONFLICT: { code: 'HERALD_ERR_IDEMPOTENCY_CONFLICT', status: 409, message: 'Idempotency key %s was used on channel %s with different content' },
  UPGRADE_REQUIRED: { code: 'HERALD_ERR_UPGRADE_REQUIRED', status: 426, message: 'This route only speaks WebSocket; send an Upgrade request' },
  ADMIN_DISABLED: { code: 'HERALD_ERR_ADMIN_DISABLED', status: 404, message: 'The admin console is disabled (ADMIN_ENABLED is not true)' },
  NOT_FOUND: { code: 'HERALD_ERR_NOT_FOUND', status: 404, message: 'Route %s %s not found' },
  METHOD_NOT_ALLOWED: { code: 'HERALD_ERR_METHOD_NOT_ALLOWED', status: 405, message: 'Method not allowed' },
  UNSUPPORTED_MEDIA_TYPE: { code: 'HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', status: 415, message: 'Unsupported content type: %s' },
  TOO_MANY_REVOCATIONS: { code: 'HERALD_ERR_TOO_MANY_REVOCATIONS', status: 429, message: 'The revocation list is full (%s entries, REVOKE_MAX): revoke by subject, or wait for entries to expire' },
  TOO_MANY_CONNECTIONS: { code: 'HERALD_ERR_TOO_MANY_CONNECTIONS', status: 429, message: 'Too many connections (%s)' },
  TOO_MANY_LIVE_STREAMS: { code: 'HERALD_ERR_TOO_MANY_LIVE_STREAMS', status: 429, message: 'Too many live streams (%s): close one, or poll GET /v1/api/nodes' },
  ORIGIN_NOT_ALLOWED: { code: 'HERALD_ERR_ORIGIN_NOT_ALLOWED', status: 403, message: 'Origin %s is not allowed' },
  RATE_LIMITED: { code: 'HERALD_ERR_RATE_LIMITED', status: 429, message: 'Too many requests, retry in %s' },
  PROXY_REFUSED: { code: 'HERALD_ERR_PROXY_REFUSED', status: 403, message: 'Refused by the application: %s' },
  PROXY_UNAVAILABLE: { code: 'HERALD_ERR_PROXY_UNAVAILABLE', status: 503, message: 'The application\'s %s hook did not answer: %s' },
  BUS_UNAVAILABLE: { code: 'HERALD_ERR_BUS_UNAVAILABLE', status: 503, message: 'Event bus unavailable: %s' },
  DRAINING: { code: 'HERALD_ERR_DRAINING', status: 503, message: 'Server is shutting down; reconnect to another node' },
  INTERNAL: { code: 'HERALD_ERR_INTERNAL', status: 500, message: 'Internal server error' }
} as const

type Table = typeof ERROR_TABLE
export type ErrorName = keyof Table
export type ErrorCode = Table[ErrorName]['code']

/**
 * The codes that are **temporary**: they may pass by themselves, so an HTTP answer carries `Retry-After` and the
 * client retries (a publish with the same idempotency id, a subscribe later). A plain list, so that the client
 * bundle takes it without the table above.
 */
export const TEMPORARY_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'HERALD_ERR_RATE_LIMITED', 'HERALD_ERR_BUS_UNAVAILABLE', 'HERALD_ERR_PROXY_UNAVAILABLE', 'HERALD_ERR_DRAINING', 'HERALD_ERR_INTERNAL'
])

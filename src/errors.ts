import createError, { type FastifyErrorConstructor } from '@fastify/error'

/**
 * Every error Herald answers with. The same code travels as `code` in an HTTP JSON error body
 * and in a WebSocket / SSE `error` frame. docs/errors.md lists them all; a test keeps the two in step.
 */
export const Errors = {
  UNAUTHORIZED: createError('HERALD_ERR_UNAUTHORIZED', 'Missing or invalid token: %s', 401),
  TOKEN_EXPIRED: createError('HERALD_ERR_TOKEN_EXPIRED', 'Token expired', 401),
  FORBIDDEN: createError('HERALD_ERR_FORBIDDEN', 'Token does not allow %s on channel %s', 403),
  BAD_CHANNEL: createError('HERALD_ERR_BAD_CHANNEL', 'Invalid channel name: %s', 400),
  VALIDATION: createError('HERALD_ERR_VALIDATION', 'Invalid request: %s', 400),
  MALFORMED_JSON: createError('HERALD_ERR_MALFORMED_JSON', 'Body or frame is not valid JSON', 400),
  BODY_TOO_LARGE: createError('HERALD_ERR_BODY_TOO_LARGE', 'Body exceeds %s bytes', 413),
  FRAME_TOO_LARGE: createError('HERALD_ERR_FRAME_TOO_LARGE', 'Frame exceeds %s bytes', 413),
  UNKNOWN_FRAME: createError('HERALD_ERR_UNKNOWN_FRAME', 'Unknown frame type: %s', 400),
  BAD_FRAME: createError('HERALD_ERR_BAD_FRAME', 'Invalid %s frame: %s', 400),
  BAD_CURSOR: createError('HERALD_ERR_BAD_CURSOR', 'Cursor is not valid: %s', 400),
  TOO_MANY_SUBSCRIPTIONS: createError('HERALD_ERR_TOO_MANY_SUBSCRIPTIONS', 'At most %s subscriptions per connection', 400),
  CHANNEL_FULL: createError('HERALD_ERR_CHANNEL_FULL', 'Channel %s is full (%s)', 409),
  UNKNOWN_NAMESPACE: createError('HERALD_ERR_UNKNOWN_NAMESPACE', 'Namespace of channel %s is not configured', 404),
  PUBLISH_DISABLED: createError('HERALD_ERR_PUBLISH_DISABLED', 'Clients may not publish to channel %s over the WebSocket (namespace option clientPublish)', 403),
  PRESENCE_DISABLED: createError('HERALD_ERR_PRESENCE_DISABLED', 'Presence is not enabled for channel %s', 404),
  PRESENCE_COUNTS_ONLY: createError('HERALD_ERR_PRESENCE_COUNTS_ONLY', 'Channel %s keeps presence counts only (namespace option presenceCountsOnly); ask for /presence/count', 400),
  ALREADY_SUBSCRIBED: createError('HERALD_ERR_ALREADY_SUBSCRIBED', 'Already subscribed to %s', 409),
  NOT_SUBSCRIBED: createError('HERALD_ERR_NOT_SUBSCRIBED', 'Not subscribed to %s', 409),
  IDEMPOTENCY_CONFLICT: createError('HERALD_ERR_IDEMPOTENCY_CONFLICT', 'Idempotency key %s was used on channel %s with different content', 409),
  UPGRADE_REQUIRED: createError('HERALD_ERR_UPGRADE_REQUIRED', 'This route only speaks WebSocket; send an Upgrade request', 426),
  NOT_FOUND: createError('HERALD_ERR_NOT_FOUND', 'Route %s %s not found', 404),
  METHOD_NOT_ALLOWED: createError('HERALD_ERR_METHOD_NOT_ALLOWED', 'Method not allowed', 405),
  UNSUPPORTED_MEDIA_TYPE: createError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', 'Unsupported content type: %s', 415),
  TOO_MANY_CONNECTIONS: createError('HERALD_ERR_TOO_MANY_CONNECTIONS', 'Too many connections (%s)', 429),
  ORIGIN_NOT_ALLOWED: createError('HERALD_ERR_ORIGIN_NOT_ALLOWED', 'Origin %s is not allowed', 403),
  RATE_LIMITED: createError('HERALD_ERR_RATE_LIMITED', 'Too many requests, retry in %s', 429),
  BUS_UNAVAILABLE: createError('HERALD_ERR_BUS_UNAVAILABLE', 'Event bus unavailable: %s', 503),
  DRAINING: createError('HERALD_ERR_DRAINING', 'Server is shutting down; reconnect to another node', 503),
  INTERNAL: createError('HERALD_ERR_INTERNAL', 'Internal server error', 500)
} satisfies Record<string, FastifyErrorConstructor>

export type ErrorCode = ReturnType<(typeof Errors)[keyof typeof Errors]>['code']

/** All codes, for the docs test and the protocol reference. */
export const ERROR_CODES: string[] = Object.values(Errors).map((E) => new E().code)

/** A Herald error is any error carrying one of our codes and an HTTP status. */
export interface HeraldError extends Error { code: string, statusCode: number }

export function isHeraldError (err: unknown): err is HeraldError {
  return err instanceof Error && typeof (err as HeraldError).code === 'string' &&
    (err as HeraldError).code.startsWith('HERALD_ERR_') && typeof (err as HeraldError).statusCode === 'number'
}

/** JSON body of an HTTP error, the same shape Fastify uses for its own errors. */
export function errorBody (err: HeraldError): { statusCode: number, code: string, error: string, message: string } {
  return { statusCode: err.statusCode, code: err.code, error: statusText(err.statusCode), message: err.message }
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict',
  413: 'Payload Too Large', 415: 'Unsupported Media Type', 426: 'Upgrade Required', 429: 'Too Many Requests',
  500: 'Internal Server Error', 503: 'Service Unavailable'
}
function statusText (status: number): string { return STATUS_TEXT[status] ?? 'Error' }

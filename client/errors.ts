/**
 * An error from Herald (a HERALD_ERR_* code of docs/errors.md, from an HTTP body or an `error` frame) or from the
 * client itself (HERALD_CLIENT_*).
 */
export class HeraldError extends Error {
  readonly code: string
  /** HTTP status, when the error came over HTTP (or the status the code maps to). */
  readonly status?: number
  /** The channel the error is about, if any. */
  readonly channel?: string
  /** The application's own code and message, when one of its proxy hooks refused (HERALD_ERR_PROXY_REFUSED). */
  readonly app?: { code: string, message?: string }

  constructor (code: string, message: string, details: { status?: number, channel?: string, app?: { code: string, message?: string } } = {}) {
    super(message)
    this.name = 'HeraldError'
    this.code = code
    this.status = details.status
    this.channel = details.channel
    if (details.app !== undefined) this.app = details.app
  }
}

/** Codes of errors the client raises itself. */
export const ClientErrorCodes = {
  /** `close()` was called (or the client closed after a terminal refusal) before the operation completed. */
  CLOSED: 'HERALD_CLIENT_CLOSED',
  /** The offline queue was full: this publish was rejected by the overflow policy. */
  QUEUE_OVERFLOW: 'HERALD_CLIENT_QUEUE_OVERFLOW',
  /** A request that needs a live connection (presence over WebSocket, refresh) lost it. */
  DISCONNECTED: 'HERALD_CLIENT_DISCONNECTED',
  /** `getToken` threw or returned something that is not a token. */
  TOKEN: 'HERALD_CLIENT_TOKEN',
  /** A network request failed. */
  NETWORK: 'HERALD_CLIENT_NETWORK',
  /** A delta event could not be applied (it does not follow what this subscription holds): the subscription fails. */
  DELTA: 'HERALD_CLIENT_DELTA'
} as const

/**
 * Server error codes that may pass: a publish is retried with the same idempotency id, a subscribe later. The
 * server's own table says which (src/protocol/error-codes.ts, no dependencies), so the two cannot disagree.
 */
export { TEMPORARY_CODES as TRANSIENT } from '../src/protocol/error-codes.js'

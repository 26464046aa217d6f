import { CloseCodes, shouldReconnect } from '../src/protocol/codes.js'

// The server's own table (src/protocol/codes.ts, no dependencies): client and server cannot disagree on it.
export { CloseCodes, shouldReconnect }

/**
 * What the client does when a connection ends with `code` (a WebSocket close code, or the `code` of an SSE
 * `disconnect` frame):
 * - `reconnect-now`: 1012, the node is draining — reconnect at once, with jitter;
 * - `refresh-token`: 4501, the token expired — get a new one (getToken), then reconnect;
 * - `terminal`: other 4500–4999 codes — do not reconnect: among them 4504, a disconnect by the server API (its
 *   default code), and 4505, a revoked token;
 * - `reconnect`: everything else (4000–4499, 1006, …) — reconnect with backoff and resume.
 */
export type CloseAction = 'reconnect' | 'reconnect-now' | 'refresh-token' | 'terminal'

export function closeAction (code: number): CloseAction {
  if (code === CloseCodes.SERVICE_RESTART) return 'reconnect-now'
  if (code === CloseCodes.TOKEN_EXPIRED) return 'refresh-token'
  if (!shouldReconnect(code)) return 'terminal'
  return 'reconnect'
}

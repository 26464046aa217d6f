import { Emitter } from './emitter.js'

/**
 * The connection's life:
 *
 *   disconnected ──► connecting ──► connected ◄──► reconnecting
 *        │               │              │               │
 *        └───────────────┴──────────────┴───────────────┴──► closed (final)
 *
 * `connecting` is the first attempt; after a failed first attempt, or the loss of an established connection,
 * the client is `reconnecting` (waiting out a backoff delay, or trying) until it is `connected` again. `closed`
 * is final: `close()` was called, or the server refused in a way that retrying cannot fix (bad token,
 * forbidden, a 45xx close code).
 */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'reconnecting' | 'closed'

export interface StateChange {
  from: ConnectionState
  to: ConnectionState
  /** Why: `connect`, `open`, a close code and reason, `heartbeat timeout`, `client`, `unauthorized`, … */
  reason: string
}

const TRANSITIONS: Record<ConnectionState, readonly ConnectionState[]> = {
  disconnected: ['connecting', 'closed'],
  connecting: ['connected', 'reconnecting', 'closed'],
  connected: ['reconnecting', 'closed'],
  reconnecting: ['connected', 'closed'],
  closed: []
}

export function canTransition (from: ConnectionState, to: ConnectionState): boolean {
  return TRANSITIONS[from].includes(to)
}

/** The state, its legal transitions, and one `change` event per transition. */
export class ConnectionStateMachine extends Emitter<{ change: StateChange }> {
  private current: ConnectionState = 'disconnected'

  get state (): ConnectionState { return this.current }

  /** Moves to `to`; throws on a transition the diagram does not have. */
  transition (to: ConnectionState, reason: string): StateChange {
    const from = this.current
    if (!canTransition(from, to)) throw new Error(`illegal connection state transition ${from} -> ${to} (${reason})`)
    this.current = to
    const change: StateChange = { from, to, reason }
    this.emit('change', change)
    return change
  }
}

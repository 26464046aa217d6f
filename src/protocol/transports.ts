/**
 * The transports, by the one name the server and the client both use: in metrics labels, logs, the client's
 * `transports` option and its `transport` events.
 */
export const TRANSPORTS = ['websocket', 'sse', 'long-poll'] as const

export type TransportName = (typeof TRANSPORTS)[number]

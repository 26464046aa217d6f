/**
 * Loaded into a Herald bench server before src/server.ts (`--import`, see the write-delay peers of scenarios.ts):
 * gives the server's WebSocket transports WS_WRITE_DELAY_MS as their default write delay. Bench plumbing only —
 * it stands in for the WebSocket route passing `config.ws.writeDelayMs` to each transport, which it does not yet;
 * the server still validates the variable with the rest of its configuration.
 */
import { WsTransport } from '../../src/transports/ws.js'

WsTransport.defaultWriteDelayMs = Number(process.env.WS_WRITE_DELAY_MS ?? 0)

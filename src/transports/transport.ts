import type { Publication } from '../bus/broker.js'
import type { HeraldError } from '../errors.js'
import { errorBody } from '../errors.js'

/** The frame's bytes, encoded once per publication and shared by every socket that writes it. */
export function frameBytes (pub: Publication): Buffer {
  let bytes = pub.bytes
  if (bytes === undefined) {
    bytes = Buffer.from(pub.frame)
    pub.bytes = bytes
  }
  return bytes
}

/**
 * The publication as one complete WebSocket text frame — FIN + opcode 1, unmasked (server to client), the
 * payload length, then the bytes — built once and written as is to every socket that has no extension
 * negotiated (see WsSession.writeEvent). RFC 6455 §5.2.
 */
export function wireFrame (pub: Publication): Buffer {
  let wire = pub.wire
  if (wire === undefined) {
    const bytes = frameBytes(pub)
    const len = bytes.length
    const headerLength = len < 126 ? 2 : len < 65536 ? 4 : 10
    wire = Buffer.allocUnsafe(headerLength + len)
    wire[0] = 0x81
    if (len < 126) {
      wire[1] = len
    } else if (len < 65536) {
      wire[1] = 126
      wire.writeUInt16BE(len, 2)
    } else {
      wire[1] = 127
      wire.writeUInt32BE(Math.floor(len / 2 ** 32), 2)
      wire.writeUInt32BE(len >>> 0, 6)
    }
    bytes.copy(wire, headerLength)
    pub.wire = wire
  }
  return wire
}

/** An `error` frame for a HERALD_ERR_*, optionally correlated to the client frame that caused it. */
export function errorFrame (err: HeraldError, id?: string, channel?: string): string {
  return JSON.stringify({ type: 'error', code: err.code, message: err.message, id, channel })
}

export { errorBody }

import type { Publication } from '../bus/broker.js'

/*
 * Per-publication byte caches owned by the WebSocket writer: built by the first socket that needs them and reused
 * by every other socket that writes the same publication (serialise once, frame once). Declared here, on the bus's
 * type, because the publication object is the one thing every subscriber of an event shares.
 */
declare module '../bus/broker.js' {
  interface Publication {
    /** `frame` as UTF-8 bytes. */
    bytes?: Buffer
    /** `frame` as one complete unmasked WebSocket text frame (header + bytes). */
    wire?: Buffer
  }
}

/** The frame's bytes, encoded once per publication and shared by every socket that writes it. */
export function frameBytes (pub: Publication): Buffer {
  pub.bytes ??= Buffer.from(pub.frame)
  return pub.bytes
}

/**
 * The publication as one complete WebSocket text frame — FIN + opcode 1, unmasked (server to client), the
 * payload length, then the bytes — built once and written as is to every socket that has no extension
 * negotiated (see WsTransport.event). RFC 6455 §5.2.
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

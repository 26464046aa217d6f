import { decodeCursorText, encodeCursorText, type Position } from '../src/protocol/cursor-codec.js'

// The server's own codec (src/protocol/cursor-codec.ts, no dependencies): the two cannot disagree on cursors.

/** "I have seen everything up to `offset` in epoch `epoch`" (docs/protocol.md). */
export type { Position }

/**
 * Builds an SSE / long-poll cursor from the client's own positions. Cursors are opaque to applications; the
 * official client builds them so that a stream can resume exactly where the application is — also after a switch
 * from another transport.
 */
export function encodeCursor (positions: Iterable<[string, Position]>): string {
  return encodeCursorText(positions)
}

/**
 * Reads a cursor the server produced: the positions it holds for `channels` (a cursor names no channel; the
 * request it came back with does). Undefined when it is not one this client understands.
 */
export function decodeCursor (text: string, channels?: Iterable<string>): Map<string, Position> | undefined {
  const decoded = decodeCursorText(text, channels)
  return typeof decoded === 'string' ? undefined : decoded
}

export function fromBase64Url (text: string): string {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/')
  const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return new TextDecoder().decode(bytes)
}

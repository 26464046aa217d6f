/** "I have seen everything up to `offset` in epoch `epoch`" (docs/protocol.md). */
export interface Position { offset: number, epoch: string }

const PREFIX = 'c1.'

/**
 * Builds an SSE / long-poll cursor from the client's own positions. Cursors are opaque to applications; the
 * official client builds them so that a stream can resume exactly where the application is — also after a switch
 * from another transport. Format (versioned by its prefix): `c1.` + base64url(JSON [[channel, offset, epoch], …]).
 */
export function encodeCursor (positions: Iterable<[string, Position]>): string {
  const parts: Array<[string, number, string]> = []
  for (const [channel, pos] of positions) parts.push([channel, pos.offset, pos.epoch])
  return PREFIX + toBase64Url(JSON.stringify(parts))
}

/** Reads a cursor produced by the server; undefined when it is not one this client understands. */
export function decodeCursor (text: string): Map<string, Position> | undefined {
  if (!text.startsWith(PREFIX)) return undefined
  try {
    const parts: unknown = JSON.parse(fromBase64Url(text.slice(PREFIX.length)))
    if (!Array.isArray(parts)) return undefined
    const out = new Map<string, Position>()
    for (const p of parts) {
      if (!Array.isArray(p) || typeof p[0] !== 'string' || typeof p[1] !== 'number' || typeof p[2] !== 'string') return undefined
      out.set(p[0], { offset: p[1], epoch: p[2] })
    }
    return out
  } catch {
    return undefined
  }
}

function toBase64Url (text: string): string {
  const bytes = new TextEncoder().encode(text)
  let binary = ''
  for (const b of bytes) binary += String.fromCharCode(b)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

export function fromBase64Url (text: string): string {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/')
  const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return new TextDecoder().decode(bytes)
}

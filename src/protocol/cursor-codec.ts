/**
 * The cursor codec, without dependencies: the server (protocol/cursor.ts) and the client library share it.
 *
 * A cursor holds the positions of a stream's channels (an SSE `id:`, a long-poll `cursor`), so any node can resume
 * the stream. Format `c2`: `c2.` then one entry per channel, joined by `.`, each `<channel key>~<offset>~<epoch>`:
 * the key is 8 characters of a 48-bit hash of the channel name (base64url), the offset base 36. A cursor names no
 * channel — the request that brings it back does — so it stays small whatever the names (about 20 characters a
 * channel; 128 channels of 128 characters fit in any header), and an entry is matched to a requested channel by its
 * key. The older `c1.` + base64url(JSON [[channel, offset, epoch], …]) is still read.
 */

export interface Position { offset: number, epoch: string }

const C2 = 'c2.'
/** What every cursor written today starts with (`c2.`); the entries follow, joined by `.`. */
export const CURSOR_PREFIX = C2
const C1 = 'c1.'
const EPOCH_RE = /^[A-Za-z0-9_-]{1,64}$/
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

/** 8 base64url characters of a 48-bit hash of `channel` (two FNV-1a lanes): the channel's key in a cursor. */
export function channelKey (channel: string): string {
  let a = 0x811c9dc5
  let b = 0x01000193 ^ 0x5bd1e995
  for (let i = 0; i < channel.length; i++) {
    const c = channel.charCodeAt(i)
    a = Math.imul(a ^ c, 0x01000193)
    b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15)
  }
  a ^= a >>> 16
  b ^= b >>> 13
  let out = ''
  for (let i = 0; i < 4; i++) out += B64[(a >>> (i * 6)) & 63]
  for (let i = 0; i < 4; i++) out += B64[(b >>> (i * 6)) & 63]
  return out
}

/** One entry of a `c2` cursor. */
export function cursorEntry (channel: string, pos: Position): string {
  return channelKey(channel) + '~' + pos.offset.toString(36) + '~' + pos.epoch
}

export function encodeEntries (entries: Iterable<string>): string {
  return C2 + [...entries].join('.')
}

/** A cursor of the given positions. */
export function encodeCursorText (positions: Iterable<[string, Position]>): string {
  const entries: string[] = []
  for (const [channel, pos] of positions) entries.push(cursorEntry(channel, pos))
  return encodeEntries(entries)
}

/**
 * The positions a cursor holds for `channels` (a `c2` cursor can only be read against the channels it is for; a
 * `c1` one also without them), or a reason it is not a cursor. Never throws.
 */
export function decodeCursorText (text: string, channels?: Iterable<string>): Map<string, Position> | string {
  if (text.startsWith(C1)) return decodeC1(text, channels)
  if (!text.startsWith(C2)) return 'unknown format'
  const byKey = new Map<string, Position>()
  if (text.length > C2.length) {
    for (const entry of text.slice(C2.length).split('.')) {
      const [key, offset, epoch, extra] = entry.split('~')
      if (extra !== undefined || key === undefined || key.length !== 8 || offset === undefined || epoch === undefined ||
        !/^[0-9a-z]{1,11}$/.test(offset) || !EPOCH_RE.test(epoch)) return 'malformed position'
      const n = parseInt(offset, 36)
      if (!Number.isSafeInteger(n)) return 'malformed position'
      byKey.set(key, { offset: n, epoch })
    }
  }
  const out = new Map<string, Position>()
  if (channels === undefined) return byKey.size === 0 ? out : 'a c2 cursor is read against its channels'
  for (const channel of channels) {
    const pos = byKey.get(channelKey(channel))
    if (pos !== undefined) out.set(channel, pos)
  }
  return out
}

function decodeC1 (text: string, channels?: Iterable<string>): Map<string, Position> | string {
  let parts: unknown
  try {
    parts = JSON.parse(fromBase64Url(text.slice(C1.length)))
  } catch {
    return 'not decodable'
  }
  if (!Array.isArray(parts)) return 'not a list'
  const all = new Map<string, Position>()
  for (const p of parts) {
    if (!Array.isArray(p) || p.length !== 3 || typeof p[0] !== 'string' || !/^[A-Za-z0-9_.:@-]{1,128}$/.test(p[0]) ||
      !Number.isSafeInteger(p[1]) || p[1] < 0 || typeof p[2] !== 'string' || !EPOCH_RE.test(p[2])) return 'malformed position'
    all.set(p[0], { offset: p[1], epoch: p[2] })
  }
  if (channels === undefined) return all
  const out = new Map<string, Position>()
  for (const channel of channels) { const pos = all.get(channel); if (pos !== undefined) out.set(channel, pos) }
  return out
}

function fromBase64Url (text: string): string {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('not base64url')
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/')
  const binary = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
}

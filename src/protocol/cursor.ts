import { Errors } from '../errors.js'
import { isValidChannel } from './channel.js'

/** Where a reader stands in one channel's stream: the last offset it has seen, in which epoch. */
export interface StreamPosition { offset: number, epoch: string }

/**
 * An SSE `id:` / long-poll `cursor`: the positions of all channels of one stream, so that any node can
 * resume it without a sticky session. Format: `c1.` + base64url(JSON `[[channel, offset, epoch], ...]`).
 * Opaque to clients; they only store and send it back.
 */
export type Cursor = Map<string, StreamPosition>

const PREFIX = 'c1.'
const MAX_CURSOR_LENGTH = 16384

export function encodeCursor (cursor: Cursor): string {
  const parts: Array<[string, number, string]> = []
  for (const [channel, pos] of cursor) parts.push([channel, pos.offset, pos.epoch])
  return PREFIX + Buffer.from(JSON.stringify(parts)).toString('base64url')
}

/** Parses a cursor or throws HERALD_ERR_BAD_CURSOR saying what is wrong with it. */
export function decodeCursor (text: string): Cursor {
  if (text.length > MAX_CURSOR_LENGTH) throw new Errors.BAD_CURSOR('too long')
  if (!text.startsWith(PREFIX)) throw new Errors.BAD_CURSOR('unknown format')
  let parts: unknown
  try {
    parts = JSON.parse(Buffer.from(text.slice(PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    throw new Errors.BAD_CURSOR('not decodable')
  }
  if (!Array.isArray(parts)) throw new Errors.BAD_CURSOR('not a list')
  const cursor: Cursor = new Map()
  for (const p of parts) {
    if (!Array.isArray(p) || p.length !== 3 || !isValidChannel(p[0]) || !Number.isSafeInteger(p[1]) || p[1] < 0 ||
      typeof p[2] !== 'string' || p[2].length === 0 || p[2].length > 64) {
      throw new Errors.BAD_CURSOR('malformed position')
    }
    cursor.set(p[0], { offset: p[1], epoch: p[2] })
  }
  return cursor
}

/**
 * The positions of one stream (an SSE stream, a long-poll session), moved as its frames go out, and encoded
 * for its SSE ids and long-poll answers. The encoding is kept until the next move.
 */
export class StreamCursor {
  private readonly positions: Cursor = new Map()
  private encoded: string | undefined

  get (channel: string): StreamPosition | undefined { return this.positions.get(channel) }

  set (channel: string, pos: StreamPosition): void {
    this.positions.set(channel, { offset: pos.offset, epoch: pos.epoch })
    this.encoded = undefined
  }

  /** Past one event of `channel`. */
  advance (channel: string, offset: number, epoch: string): void {
    const pos = this.positions.get(channel)
    if (pos !== undefined && pos.epoch === epoch) pos.offset = offset
    else this.positions.set(channel, { offset, epoch })
    this.encoded = undefined
  }

  encode (): string {
    this.encoded ??= encodeCursor(this.positions)
    return this.encoded
  }
}

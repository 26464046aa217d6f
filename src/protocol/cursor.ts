import { Errors } from '../errors.js'
import { channelKey, decodeCursorText, encodeCursorText, encodeEntries, type Position } from './cursor-codec.js'

/** Where a reader stands in one channel's stream: the last offset it has seen, in which epoch. */
export type StreamPosition = Position

/**
 * An SSE `id:` / long-poll `cursor`: the positions of all channels of one stream, so that any node can resume it
 * without a sticky session. Opaque to clients; they store it and send it back. Format: protocol/cursor-codec.ts.
 */
export type Cursor = Map<string, StreamPosition>

/** Longest cursor read: room for every channel a request may carry, and never less than the old format needed. */
function maxLength (channels: number): number { return Math.max(16384, 96 * channels + 16) }

export function encodeCursor (cursor: Cursor): string { return encodeCursorText(cursor) }

/** The positions a cursor holds for `channels`, or HERALD_ERR_BAD_CURSOR saying what is wrong with it. */
export function decodeCursor (text: string, channels: readonly string[]): Cursor {
  if (text.length > maxLength(channels.length)) throw new Errors.BAD_CURSOR('too long')
  const decoded = decodeCursorText(text, channels)
  if (typeof decoded === 'string') throw new Errors.BAD_CURSOR(decoded)
  return decoded
}

/**
 * The positions of one stream (an SSE stream, a long-poll session), moved as its frames go out, and encoded for
 * its SSE ids and long-poll answers. Each channel's entry is kept encoded, so a move re-encodes one entry and the
 * cursor is a join of the rest (an SSE event costs one short string per channel, not a JSON and base64 pass).
 */
export class StreamCursor {
  private readonly positions: Cursor = new Map()
  /** Per channel, its encoded entry, and its key (hashed once). */
  private readonly entries = new Map<string, string>()
  private readonly keys = new Map<string, string>()
  private encoded: string | undefined

  get (channel: string): StreamPosition | undefined { return this.positions.get(channel) }

  set (channel: string, pos: StreamPosition): void {
    this.positions.set(channel, { offset: pos.offset, epoch: pos.epoch })
    this.entry(channel, pos.offset, pos.epoch)
  }

  /** Past one event of `channel`. */
  advance (channel: string, offset: number, epoch: string): void {
    const pos = this.positions.get(channel)
    if (pos !== undefined && pos.epoch === epoch) pos.offset = offset
    else this.positions.set(channel, { offset, epoch })
    this.entry(channel, offset, epoch)
  }

  private entry (channel: string, offset: number, epoch: string): void {
    let key = this.keys.get(channel)
    if (key === undefined) this.keys.set(channel, key = channelKey(channel))
    this.entries.set(channel, key + '~' + offset.toString(36) + '~' + epoch)
    this.encoded = undefined
  }

  encode (): string {
    this.encoded ??= encodeEntries(this.entries.values())
    return this.encoded
  }
}

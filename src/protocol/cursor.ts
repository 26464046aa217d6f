import { Errors } from '../errors.js'
import { CURSOR_PREFIX, channelKey, decodeCursorText, encodeCursorText, type Position } from './cursor-codec.js'

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

/** One channel of a StreamCursor: its position, and its cursor entry in parts (key and epoch kept, offset redone). */
interface Slot { pos: StreamPosition, head: string, tail: string, at: number, stale: boolean }

/**
 * The positions of one stream (an SSE stream, a long-poll session), moved as its frames go out, and encoded for
 * its SSE ids and long-poll answers. Each channel's entry is kept encoded in an array; an event only moves the
 * offset and marks the entry stale, and `encode` re-encodes the stale entries (one offset in base 36 each) and joins
 * them, at most once per move: an SSE id costs a short string, not a pass over every channel's key, offset and
 * epoch, and a stream whose ids are shared (one channel: sse.ts) builds none.
 */
export class StreamCursor {
  private readonly slots = new Map<string, Slot>()
  /** The entries, in the order the channels came (the encoded cursor joins them). */
  private readonly entries: string[] = []
  /** Entries whose offset moved since they were encoded. */
  private readonly stale: Slot[] = []
  private encoded: string | undefined

  /** How many channels it holds. */
  get size (): number { return this.entries.length }

  get (channel: string): StreamPosition | undefined { return this.slots.get(channel)?.pos }

  set (channel: string, pos: StreamPosition): void {
    const slot = this.slots.get(channel)
    if (slot === undefined) this.add(channel, pos.offset, pos.epoch)
    else this.move(slot, { offset: pos.offset, epoch: pos.epoch })
  }

  /** Past one event of `channel`. */
  advance (channel: string, offset: number, epoch: string): void {
    const slot = this.slots.get(channel)
    if (slot === undefined) { this.add(channel, offset, epoch); return }
    if (slot.pos.epoch !== epoch) { this.move(slot, { offset, epoch }); return }
    slot.pos.offset = offset
    if (!slot.stale) { slot.stale = true; this.stale.push(slot) }
    this.encoded = undefined
  }

  encode (): string {
    if (this.encoded === undefined) {
      for (let i = 0; i < this.stale.length; i++) {
        const slot = this.stale[i]
        slot.stale = false
        this.entries[slot.at] = slot.head + slot.pos.offset.toString(36) + slot.tail
      }
      this.stale.length = 0
      this.encoded = this.entries.length === 1 ? CURSOR_PREFIX + this.entries[0] : CURSOR_PREFIX + this.entries.join('.')
    }
    return this.encoded
  }

  private add (channel: string, offset: number, epoch: string): void {
    const slot: Slot = { pos: { offset, epoch }, head: channelKey(channel) + '~', tail: '~' + epoch, at: this.entries.length, stale: false }
    this.slots.set(channel, slot)
    this.entries.push(slot.head + offset.toString(36) + slot.tail)
    this.encoded = undefined
  }

  private move (slot: Slot, pos: StreamPosition): void {
    slot.pos = pos
    slot.tail = '~' + pos.epoch
    this.entries[slot.at] = slot.head + pos.offset.toString(36) + slot.tail
    this.encoded = undefined
  }
}

/**
 * Allocation-free readers for the few numbers the load generator needs out of an event frame. A frame is never
 * parsed as a whole: the generator finds `"t":`, `"c":`, `"s":` (its own send time, channel index and sequence,
 * embedded in `data`) and, for Herald, `"offset":`, with Buffer.indexOf and reads the digits in place.
 *
 * The payload the generator publishes is `{"t":<ms since epoch, µs precision>,"c":<room index>,"s":<seq in room>,"p":"xxx…"}`.
 */

const T = Buffer.from('"t":')
const C = Buffer.from('"c":')
const S = Buffer.from('"s":')
const OFFSET = Buffer.from('"offset":')
const CURSOR = Buffer.from('"cursor":"')
const EVENT_HEAD = Buffer.from('{"type":"event"')
const DATA = Buffer.from('data: ')

/** Result of `scanEvent`, reused for every frame (no allocation per message). */
export interface Scan { t: number, c: number, s: number, offset: number, end: number }
export const scan: Scan = { t: 0, c: 0, s: 0, offset: -1, end: 0 }

/** Reads a JSON number (digits, optional `-`, optional fraction) at `i`; sets `numEnd`. NaN when there is none. */
let numEnd = 0
export function numberAt (buf: Buffer, i: number): number {
  let neg = false
  if (buf[i] === 0x2d) { neg = true; i++ }
  let v = 0
  let digits = 0
  let b = buf[i]
  while (b >= 0x30 && b <= 0x39) { v = v * 10 + (b - 0x30); digits++; b = buf[++i] }
  if (b === 0x2e) {
    let scale = 0.1
    b = buf[++i]
    while (b >= 0x30 && b <= 0x39) { v += (b - 0x30) * scale; scale /= 10; b = buf[++i] }
  }
  numEnd = i
  if (digits === 0) return NaN
  return neg ? -v : v
}

/**
 * Finds the generator's fields in the event frame that starts at `from` (and, when `withOffset`, Herald's
 * `offset`, which precedes `data`). Returns false when the frame does not carry them.
 */
export function scanEvent (buf: Buffer, from: number, withOffset: boolean): boolean {
  let at = from
  if (withOffset) {
    const o = buf.indexOf(OFFSET, at)
    if (o < 0) return false
    scan.offset = numberAt(buf, o + 9)
    at = numEnd
  } else {
    scan.offset = -1
  }
  let i = buf.indexOf(T, at)
  if (i < 0) return false
  scan.t = numberAt(buf, i + 4)
  i = buf.indexOf(C, numEnd)
  if (i < 0) return false
  scan.c = numberAt(buf, i + 4)
  i = buf.indexOf(S, numEnd)
  if (i < 0) return false
  scan.s = numberAt(buf, i + 4)
  scan.end = numEnd
  return !Number.isNaN(scan.t) && !Number.isNaN(scan.c) && !Number.isNaN(scan.s)
}

/** `{"type":"event"…` — a Herald (or bare-ws peer) event frame, checked on two bytes. */
export function isJsonEvent (buf: Buffer, at = 0): boolean {
  // {"type":"event" : index 9 is 'e', 10 is 'v' ("error" has 'r' there)
  return buf[at] === 0x7b && buf[at + 9] === 0x65 && buf[at + 10] === 0x76 && buf[at + 1] === 0x22
}

/** `42["event",…` — a Socket.IO EVENT packet named "event" (engine.io message 4, socket.io event 2). */
export function isSocketIoEvent (buf: Buffer, at = 0): boolean {
  return buf[at] === 0x34 && buf[at + 1] === 0x32 && buf[at + 2] === 0x5b && buf[at + 4] === 0x65 && buf[at + 5] === 0x76
}

/** Next `{"type":"event"` at or after `from` (long-poll bodies hold several frames), or -1. */
export function nextEvent (buf: Buffer, from: number): number {
  return buf.indexOf(EVENT_HEAD, from)
}

/** The `cursor` string of a long-poll answer. */
export function cursorOf (buf: Buffer): string | undefined {
  const i = buf.indexOf(CURSOR)
  if (i < 0) return undefined
  const start = i + CURSOR.length
  const end = buf.indexOf(0x22, start)
  return end < 0 ? undefined : buf.toString('latin1', start, end)
}

/**
 * Splits Server-Sent Events out of a stream of chunks without decoding text: calls `onData(buf, start, end)`
 * for the `data:` line of each complete message. Keeps the incomplete tail between chunks.
 */
export class SseSplitter {
  private tail: Buffer | null = null

  constructor (private readonly onData: (buf: Buffer, start: number, end: number) => void) {}

  push (chunk: Buffer): void {
    const buf = this.tail === null ? chunk : Buffer.concat([this.tail, chunk])
    this.tail = null
    let pos = 0
    for (;;) {
      const end = buf.indexOf('\n\n', pos)
      if (end < 0) break
      const d = buf.indexOf(DATA, pos)
      if (d >= 0 && d < end) this.onData(buf, d + 6, end)
      pos = end + 2
    }
    if (pos < buf.length) this.tail = Buffer.from(buf.subarray(pos))
  }
}

/** The payload the generator publishes: `{"t":…,"c":…,"s":…,"p":"x…"}`, padded so `data` is about `size` bytes. */
export function payload (t: number, c: number, s: number, size: number): string {
  const head = '{"t":' + t.toFixed(3) + ',"c":' + c + ',"s":' + s + ',"p":"'
  const pad = Math.max(0, size - head.length - 2)
  return head + padding(pad) + '"}'
}

let padCache = ''
function padding (n: number): string {
  if (padCache.length < n) padCache = 'x'.repeat(Math.max(n, 2 * padCache.length))
  return padCache.slice(0, n)
}

/** The generator's own clock, comparable across its processes on one machine (ms since the epoch, µs precision). */
export function nowMs (): number {
  return performance.timeOrigin + performance.now()
}

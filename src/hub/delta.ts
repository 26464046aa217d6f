import jsonPatch from 'fast-json-patch'
import type { Publication } from '../bus/broker.js'

/**
 * Delta delivery (namespace option `delta`, asked for per subscription): an event whose subscriber holds the one
 * just before it may carry, instead of its data, a JSON Patch (RFC 6902) that turns the previous event's data into
 * this one's (`"delta": true`). JSON Patch rather than a binary delta (fossil, as Centrifugo uses): it is JSON, so it
 * travels inside the JSON frames of every transport as it is (a byte delta of UTF-8 text can split a character and
 * is no JSON string), it describes the changes of structured documents by path — what "a large, slowly changing
 * document" means here — and the client applies it with the same well-kept library.
 *
 * Computed once per publication on a node (not per subscriber), lazily (only when a delta subscriber needs it),
 * and only used when it is smaller than the data it stands for; resume and history always give full events.
 */

/** What a delta event replaces: the publication whose data it patches (by offset and epoch) and its frame. */
export interface DeltaPublication extends Publication { delta: true }

/** Parsed data of a publication, and its delta against the one before it (null: a full event is as small). */
const parsed = new WeakMap<Publication, { data: unknown, head: string, dataLength: number }>()
const deltas = new WeakMap<Publication, { baseOffset: number, baseEpoch: string, delta: DeltaPublication | null }>()

/** Path segments that would let a patch reach an object's prototype in a client (never sent: a full event goes). */
const UNSAFE_SEGMENT = /\/(__proto__|constructor|prototype)(\/|$)/

function parse (pub: Publication): { data: unknown, head: string, dataLength: number } {
  let entry = parsed.get(pub)
  if (entry === undefined) {
    // The frame ends with `,"data":<json>}` (protocol/frames.ts builds it so): what is before it is the head.
    const at = pub.frame.indexOf(',"data":')
    const head = pub.frame.slice(0, at)
    const json = pub.frame.slice(at + 8, -1)
    entry = { data: JSON.parse(json), head, dataLength: json.length }
    parsed.set(pub, entry)
  }
  return entry
}

/**
 * The delta event of `pub` for a subscriber that holds `base` (the publication just before it in the same epoch),
 * or undefined when a full event must go (not the one just before, not an object, no smaller, or unsafe).
 */
export function deltaOf (base: Publication, pub: Publication): DeltaPublication | undefined {
  if (base.epoch !== pub.epoch || base.offset !== pub.offset - 1) return undefined
  const cached = deltas.get(pub)
  if (cached !== undefined && cached.baseOffset === base.offset && cached.baseEpoch === base.epoch) return cached.delta ?? undefined
  let delta: DeltaPublication | null = null
  try {
    const from = parse(base)
    const to = parse(pub)
    if (isContainer(from.data) && isContainer(to.data) && Array.isArray(from.data) === Array.isArray(to.data)) {
      const patch = jsonPatch.compare(from.data as object, to.data as object)
      const text = JSON.stringify(patch)
      if (text.length < to.dataLength && !patch.some((op) => UNSAFE_SEGMENT.test(op.path) || ('from' in op && UNSAFE_SEGMENT.test(op.from)))) {
        delta = { channel: pub.channel, offset: pub.offset, epoch: pub.epoch, ts: pub.ts, frame: to.head + ',"delta":true,"data":' + text + '}', delta: true }
      }
    }
  } catch {
    delta = null // data that does not parse as the frame promised: send it whole
  }
  deltas.set(pub, { baseOffset: base.offset, baseEpoch: base.epoch, delta })
  // Only the newest publication's parsed data is kept (the base of the next delta): parsed objects weigh more than
  // their frames, and the in-process history, which holds these publications, is bounded by frame bytes.
  parsed.delete(base)
  return delta ?? undefined
}

function isContainer (value: unknown): boolean { return value !== null && typeof value === 'object' }

import { Errors, type HeraldError } from '../errors.js'
import { isValidChannel } from './channel.js'
import { type ClientFrame, type ClientFrameType, clientFrameCheckers } from './client-frames.js'
import { MAX_JSON_DEPTH, describe, nestedDeeperThan } from './json.js'

export type ParsedFrame = { ok: true, frame: ClientFrame } | { ok: false, error: HeraldError, id?: string, channel?: string }

/**
 * Parses one client text frame. Never throws: a bad frame yields the error to answer with, and the frame's
 * `id` when it had a readable one, so the error can be correlated.
 */
export function parseClientFrame (text: string): ParsedFrame {
  if (nestedDeeperThan(text)) return { ok: false, error: new Errors.BAD_FRAME('client', `JSON nested deeper than ${MAX_JSON_DEPTH} levels`) }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { ok: false, error: new Errors.MALFORMED_JSON() }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, error: new Errors.BAD_FRAME('client', 'a frame is a JSON object with a "type"') }
  }
  const obj = value as Record<string, unknown>
  const id = typeof obj.id === 'string' && isFrameId(obj.id) ? obj.id : undefined
  const channel = typeof obj.channel === 'string' && isValidChannel(obj.channel) ? obj.channel : undefined
  const type = obj.type
  if (typeof type !== 'string' || !Object.hasOwn(clientFrameCheckers, type)) {
    return { ok: false, error: new Errors.UNKNOWN_FRAME(describe(type ?? null)), id }
  }
  if ('channel' in obj && !isValidChannel(obj.channel)) {
    return { ok: false, error: new Errors.BAD_CHANNEL(describe(obj.channel)), id }
  }
  const checker = clientFrameCheckers[type as ClientFrameType]
  if (!checker.Check(obj)) {
    const first = checker.Errors(obj)[0]
    const where = first === undefined ? '' : (first.instancePath === '' ? '' : first.instancePath + ' ') + first.message
    return { ok: false, error: new Errors.BAD_FRAME(type, where), id, channel }
  }
  return { ok: true, frame: obj as ClientFrame }
}

/** 1–128 characters, counted as the schema counts them (code points, not UTF-16 units). */
function isFrameId (id: string): boolean {
  if (id.length === 0 || id.length > 256) return false
  let n = 0
  for (const _ of id) if (++n > 128) return false
  return true
}

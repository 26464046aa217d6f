import type { Publication } from '../bus/broker.js'
import type { HeraldError } from '../errors.js'
import { errorBody } from '../errors.js'

/** The frame's bytes, encoded once per publication and shared by every socket that writes it. */
export function frameBytes (pub: Publication): Buffer {
  let bytes = pub.bytes
  if (bytes === undefined) {
    bytes = Buffer.from(pub.frame)
    pub.bytes = bytes
  }
  return bytes
}

/** An `error` frame for a HERALD_ERR_*, optionally correlated to the client frame that caused it. */
export function errorFrame (err: HeraldError, id?: string, channel?: string): string {
  return JSON.stringify({ type: 'error', code: err.code, message: err.message, id, channel })
}

export { errorBody }

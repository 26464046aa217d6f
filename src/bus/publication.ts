import { createHash, randomBytes } from 'node:crypto'
import type { PublishRequest } from './broker.js'
import { frame } from '../protocol/frames.js'

/** The offset-independent tail of a publication's `event` frame (protocol/frames.ts: `frame.eventTail`). */
export function frameTail (req: PublishRequest, ts: number): string {
  return frame.eventTail(ts, req.event, req.data)
}

/** Fingerprint of a publish's content, to tell a retry from a different publish reusing an idempotency key. */
export function contentHash (req: PublishRequest): string {
  const hash = createHash('sha1').update(req.event ?? '').update('\0').update(JSON.stringify(req.data))
  if (req.version !== undefined) hash.update('\0v' + String(req.version))
  return hash.digest('base64url').slice(0, 16)
}

const EPOCH_BYTES = 6
const POOL_EPOCHS = 1024
let pool = Buffer.alloc(0)
let poolAt = 0

/**
 * A new epoch: short, random, URL- and JSON-safe. Every Redis publish offers one (used only if the channel's
 * stream is new), so the random bytes are drawn 6 KiB at a time rather than by a synchronous call per publish.
 */
export function newEpoch (): string {
  if (poolAt >= pool.length) { pool = randomBytes(EPOCH_BYTES * POOL_EPOCHS); poolAt = 0 }
  poolAt += EPOCH_BYTES
  return pool.toString('base64url', poolAt - EPOCH_BYTES, poolAt)
}

import { createHash, randomBytes } from 'node:crypto'
import type { PublishRequest } from './broker.js'

/**
 * The part of an `event` frame that does not depend on the offset: `,"ts":…,"event":…,"data":…}`.
 * The bus prepends `{"type":"event","channel":…,"offset":…,"epoch":…` when it assigns the offset, so the
 * payload is serialised exactly once, on the publishing node.
 */
export function frameTail (req: PublishRequest, ts: number): string {
  const event = req.event === undefined ? '' : ',"event":' + JSON.stringify(req.event)
  return ',"ts":' + ts + event + ',"data":' + JSON.stringify(req.data) + '}'
}

export function frameHead (channelJson: string, offset: number, epoch: string): string {
  return '{"type":"event","channel":' + channelJson + ',"offset":' + offset + ',"epoch":"' + epoch + '"'
}

/** Fingerprint of a publish's content, to tell a retry from a different publish reusing an idempotency key. */
export function contentHash (req: PublishRequest): string {
  return createHash('sha1').update(req.event ?? '').update('\0').update(JSON.stringify(req.data)).digest('base64url').slice(0, 16)
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

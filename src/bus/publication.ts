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

/** A new epoch: short, random, URL- and JSON-safe. */
export function newEpoch (): string {
  return randomBytes(6).toString('base64url')
}

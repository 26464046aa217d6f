import type { Principal } from '../auth/permissions.js'
import type { Namespaces } from '../namespaces.js'
import { can } from '../auth/permissions.js'
import { isValidChannel } from '../protocol/channel.js'
import { type Cursor, decodeCursor } from '../protocol/cursor.js'
import { Errors } from '../errors.js'
import { describe } from '../protocol/json.js'

export interface StreamRequest {
  channels: string[]
  /** Positions to resume from, for the requested channels that have one. */
  cursor: Cursor
}

/**
 * The channels and resume cursor of an SSE or long-poll request, checked in the same order on both:
 * names, count, permission for each, then the cursor. Throws the HERALD_ERR_* to answer with.
 */
export function parseStreamRequest (limits: { maxSubscriptions: number, namespaces: Namespaces }, principal: Principal, channelParam: string | string[] | undefined, cursorText: string | undefined): StreamRequest {
  const channels = [...new Set(channelParam === undefined ? [] : Array.isArray(channelParam) ? channelParam : [channelParam])]
  if (channels.length === 0) throw new Errors.VALIDATION('at least one "channel" query parameter is required')
  if (channels.length > limits.maxSubscriptions) throw new Errors.TOO_MANY_SUBSCRIPTIONS(limits.maxSubscriptions)
  for (const channel of channels) if (!isValidChannel(channel)) throw new Errors.BAD_CHANNEL(describe(channel))
  for (const channel of channels) if (!can(principal, 'subscribe', channel)) throw new Errors.FORBIDDEN('subscribe', channel)
  for (const channel of channels) limits.namespaces.require(channel)
  const cursor: Cursor = cursorText !== undefined && cursorText !== '' ? decodeCursor(cursorText, channels) : new Map()
  return { channels, cursor }
}

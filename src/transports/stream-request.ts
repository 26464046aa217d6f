import type { Principal } from '../auth/permissions.js'
import type { Namespaces } from '../namespaces.js'
import { subscribeRule } from '../auth/permissions.js'
import { isValidChannel } from '../protocol/channel.js'
import { type Cursor, decodeCursor } from '../protocol/cursor.js'
import { Errors } from '../errors.js'
import { describe } from '../protocol/json.js'

export interface StreamRequest {
  /** Every channel of the stream: those asked for, then the server's (`serverChannels`). */
  channels: string[]
  /** Positions to resume from, for the channels that have one. */
  cursor: Cursor
  /** Channels the server subscribes the stream to (the principal's `channels`): the client did not ask for them. */
  serverChannels: Set<string>
  /** Some channel is decided by the subscribe hook for this subject: the stream is its own, never shared. */
  personal: boolean
}

/**
 * The channels and resume cursor of an SSE or long-poll request, checked in the same order on both: names, count,
 * permission for each, then the cursor. The principal's `channels` (a token claim or the connect hook's answer) join
 * those asked for, so a stream may ask for none. Throws the HERALD_ERR_* to answer with.
 */
export function parseStreamRequest (limits: { maxSubscriptions: number, namespaces: Namespaces }, principal: Principal, channelParam: string | string[] | undefined, cursorText: string | undefined): StreamRequest {
  const asked = [...new Set(channelParam === undefined ? [] : Array.isArray(channelParam) ? channelParam : [channelParam])]
  const serverChannels = new Set(principal.channels ?? [])
  const channels = [...new Set([...asked, ...serverChannels])]
  if (channels.length === 0) throw new Errors.VALIDATION('at least one "channel" query parameter is required')
  if (channels.length > limits.maxSubscriptions) throw new Errors.TOO_MANY_SUBSCRIPTIONS(limits.maxSubscriptions)
  for (const channel of asked) if (!isValidChannel(channel)) throw new Errors.BAD_CHANNEL(describe(channel))
  let personal = false
  for (const channel of asked) {
    if (serverChannels.has(channel)) continue
    const rule = subscribeRule(principal, channel, limits.namespaces.of(channel)?.subscribeProxy === true)
    if (rule === 'deny') throw new Errors.FORBIDDEN('subscribe', channel)
    if (rule === 'ask') personal = true
  }
  for (const channel of channels) limits.namespaces.require(channel)
  const cursor: Cursor = cursorText !== undefined && cursorText !== '' ? decodeCursor(cursorText, channels) : new Map()
  return { channels, cursor, serverChannels, personal }
}

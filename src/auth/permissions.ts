import { channelUsers } from '../protocol/channel.js'

/**
 * Channel patterns in a token's `subscribe` and `publish` claims. A pattern is a channel name in which `*`
 * stands for any run of characters (also none, also `:`): `chat:*` allows `chat:lobby` and `chat:a:b`;
 * `*` allows every channel; `news` allows exactly `news`.
 */
export interface Principal {
  sub: string
  subscribe: string[]
  publish: string[]
  /** Expiry, seconds since the epoch, when the token has one. */
  exp?: number
  /** Optional `info` claim, passed on to presence. */
  info?: unknown
  /** Issue time (`iat`, seconds since the epoch), when the token has one: revocations by subject compare it. */
  iat?: number
  /** Token id (`jti`), when the token has one: a revocation may name it. */
  jti?: string
  /** Channels the server subscribes the connection to on connect (the `channels` claim, or the connect hook's). */
  channels?: string[]
  /** Admitted by the connect hook (docs/proxy.md), not by a token: the refresh hook extends it. */
  proxied?: true
}

export type Action = 'subscribe' | 'publish'

/**
 * Whether `channel` fits `pattern`. A linear-time glob match, not a regular expression: the parts between the `*`s
 * are found left to right, each at its first place after the one before (the first part anchored at the start, the
 * last at the end). Greedy first-fit is exact for `*`-only globs, and never backtracks, so no pattern can make a
 * check slow (a `.*`-per-star regex took seconds on `*a*a*a*a*b`, and each extra `*a` multiplied that).
 */
export function matches (pattern: string, channel: string): boolean {
  if (pattern === '*') return true
  const star = pattern.indexOf('*')
  if (star === -1) return pattern === channel
  const parts = pattern.split('*')
  const first = parts[0]
  const last = parts[parts.length - 1]
  if (channel.length < first.length + last.length || !channel.startsWith(first) || !channel.endsWith(last)) return false
  let at = first.length
  const end = channel.length - last.length
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i]
    if (part === '') continue
    const found = channel.indexOf(part, at)
    if (found === -1 || found + part.length > end) return false
    at = found + part.length
  }
  return true
}

/** Characters a permission pattern may hold: those of channel names, and `*`. */
export const PATTERN_RE = /^[A-Za-z0-9_.:@*-]{1,256}$/

/**
 * Whether the principal may do `action` on `channel`. Subscribing (and reading history or presence, which go with
 * it) is also allowed on the channels the server subscribes it to (`channels`); a user-limited channel
 * (`name#alice,bob`) only by the subjects it lists, whatever the patterns say (`*` must not open another user's
 * channel). Publishing goes by the patterns alone.
 */
export function can (principal: Principal, action: Action, channel: string): boolean {
  if (action === 'subscribe') {
    if (principal.channels !== undefined && principal.channels.includes(channel)) return true
    const users = channelUsers(channel)
    if (users !== undefined) return users.includes(principal.sub)
  }
  for (const pattern of principal[action]) if (matches(pattern, channel)) return true
  return false
}

/**
 * How a client's own subscribe is decided: allowed by the token, refused, or (a namespace with `subscribeProxy`)
 * asked of the application's subscribe hook — which then decides instead of the patterns; a user-limited channel
 * still admits only its subjects.
 */
export function subscribeRule (principal: Principal, channel: string, proxied: boolean): 'allow' | 'ask' | 'deny' {
  if (principal.channels !== undefined && principal.channels.includes(channel)) return 'allow'
  const users = channelUsers(channel)
  if (users !== undefined && !users.includes(principal.sub)) return 'deny'
  if (proxied) return 'ask'
  return can(principal, 'subscribe', channel) ? 'allow' : 'deny'
}

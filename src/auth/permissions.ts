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

export function can (principal: Principal, action: Action, channel: string): boolean {
  for (const pattern of principal[action]) if (matches(pattern, channel)) return true
  return false
}

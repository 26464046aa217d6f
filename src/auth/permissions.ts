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
}

export type Action = 'subscribe' | 'publish'

const compiled = new Map<string, RegExp>()

function toRegExp (pattern: string): RegExp {
  let re = compiled.get(pattern)
  if (re === undefined) {
    re = new RegExp('^' + pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\-]/g, '\\$&')).join('.*') + '$')
    if (compiled.size > 10_000) compiled.clear()
    compiled.set(pattern, re)
  }
  return re
}

export function matches (pattern: string, channel: string): boolean {
  if (pattern === '*') return true
  if (!pattern.includes('*')) return pattern === channel
  return toRegExp(pattern).test(channel)
}

export function can (principal: Principal, action: Action, channel: string): boolean {
  for (const pattern of principal[action]) if (matches(pattern, channel)) return true
  return false
}

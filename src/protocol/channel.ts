/**
 * Channel names: 1–128 characters from `A-Z a-z 0-9 _ - . : @`. The part before the first `:` is the
 * namespace (`chat:lobby` is in namespace `chat`). Braces are excluded because Redis keys wrap the name in a
 * `{channel}` hash tag; `*` is excluded because it is the wildcard of permission patterns.
 */
export const CHANNEL_PATTERN = '^[A-Za-z0-9_.:@-]{1,128}$'
const CHANNEL_RE = new RegExp(CHANNEL_PATTERN)

export function isValidChannel (name: unknown): name is string {
  return typeof name === 'string' && CHANNEL_RE.test(name)
}

export function namespaceOf (channel: string): string {
  const i = channel.indexOf(':')
  return i === -1 ? '' : channel.slice(0, i)
}

/**
 * Channel names: 1–128 characters from `A-Z a-z 0-9 _ - . : @`, optionally followed by `#` and a comma list of
 * token subjects (same characters): a **user-limited** channel, `dm:42#alice,bob`, which only those subjects may
 * subscribe to (auth/permissions.ts). The part before the first `:` (of the name before `#`) is the namespace
 * (`chat:lobby` is in namespace `chat`). Braces are excluded because Redis keys wrap the name in a `{channel}` hash
 * tag (so every name stays in one cluster slot); `*` because it is the wildcard of permission patterns. The grammar
 * is unambiguous (`,` only after `#`, each part from a class without `#` or `,`), so matching it is linear.
 */
export const CHANNEL_PATTERN = '^(?=.{1,128}$)[A-Za-z0-9_.:@-]+(#[A-Za-z0-9_.:@-]+(,[A-Za-z0-9_.:@-]+)*)?$'
const CHANNEL_RE = new RegExp(CHANNEL_PATTERN)

/** What the schemas say a channel name is (one description for every route and frame). */
export const CHANNEL_DESCRIPTION = 'Channel name: 1–128 of A-Z a-z 0-9 _ - . : @, optionally `#` and a comma list of the only subjects that may subscribe (`dm:1#alice,bob`)'

/** The subjects a user-limited channel (`name#alice,bob`) admits; undefined for any other channel. */
export function channelUsers (channel: string): string[] | undefined {
  const hash = channel.indexOf('#')
  return hash === -1 ? undefined : channel.slice(hash + 1).split(',')
}

export function isValidChannel (name: unknown): name is string {
  return typeof name === 'string' && CHANNEL_RE.test(name)
}

export function namespaceOf (channel: string): string {
  const i = channel.indexOf(':')
  if (i === -1) return ''
  const hash = channel.indexOf('#')
  return hash !== -1 && hash < i ? '' : channel.slice(0, i)
}

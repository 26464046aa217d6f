import { fromBase64Url } from './cursor.js'

/**
 * The `exp` of a JWT, in ms since 1970, read from its payload without verifying it (the server verifies; the
 * client only needs to know when to refresh). Undefined when the token has no readable `exp`.
 */
export function tokenExpiry (token: string): number | undefined {
  const exp = claimsOf(token)?.exp
  return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined
}

/** Whether the token names `channels` the server subscribes the connection to (so a stream opens without any of ours). */
export function tokenHasChannels (token: string): boolean {
  const channels = claimsOf(token)?.channels
  return Array.isArray(channels) && channels.length > 0
}

function claimsOf (token: string): Record<string, unknown> | undefined {
  const parts = token.split('.')
  if (parts.length !== 3) return undefined
  try {
    const claims: unknown = JSON.parse(fromBase64Url(parts[1]))
    return claims !== null && typeof claims === 'object' ? claims as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

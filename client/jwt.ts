import { fromBase64Url } from './cursor.js'

/**
 * The `exp` of a JWT, in ms since 1970, read from its payload without verifying it (the server verifies; the
 * client only needs to know when to refresh). Undefined when the token has no readable `exp`.
 */
export function tokenExpiry (token: string): number | undefined {
  const parts = token.split('.')
  if (parts.length !== 3) return undefined
  try {
    const claims: unknown = JSON.parse(fromBase64Url(parts[1]))
    const exp = (claims as { exp?: unknown } | null)?.exp
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined
  } catch {
    return undefined
  }
}

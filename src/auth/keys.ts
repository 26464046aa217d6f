import { createPublicKey } from 'node:crypto'
import { readFileSync } from 'node:fs'

export interface JwtSettings {
  secret?: string
  publicKey?: string
  algorithms: string[]
  /** Refuse tokens without `exp` (JWT_REQUIRE_EXP). */
  requireExp?: boolean
  /** A token's `aud` must be one of these (JWT_AUDIENCE); unset: not checked. */
  audience?: string[]
  /** A token's `iss` must be one of these (JWT_ISSUER); unset: not checked. */
  issuer?: string[]
}

const HMAC = /^HS(256|384|512)$/
const RSA = /^(RS|PS)(256|384|512)$/
const EC = /^ES(256|384|512)$/

/**
 * Checks that the JWT key and the accepted algorithms belong together, and reads a public key given as a path.
 * Returns the settings with the key as PEM text, and one message per problem (empty when they are sound).
 *
 * Why so strict: a verifier that accepts HS* next to a public key uses the PEM text as the HMAC secret, and
 * the public key is public — anyone could sign tokens (algorithm confusion). So HS* goes only with a secret,
 * RS/PS/ES only with a public key of the matching type, and a "public key" that is neither PEM text nor a
 * readable PEM file is refused instead of being taken as a secret.
 */
export function resolveJwtSettings (jwt: JwtSettings): { jwt: JwtSettings, problems: string[] } {
  const problems: string[] = []
  const { secret, algorithms } = jwt
  let publicKey = jwt.publicKey
  if (algorithms.length === 0) problems.push('JWT_ALGORITHMS: at least one algorithm is needed')
  if (secret !== undefined && publicKey !== undefined) problems.push('JWT_SECRET and JWT_PUBLIC_KEY are both set: use one of them')
  if (secret !== undefined) {
    if (secret.length < 16) problems.push('JWT_SECRET: at least 16 characters')
    const wrong = algorithms.filter((a) => !HMAC.test(a))
    if (wrong.length > 0) problems.push(`JWT_ALGORITHMS=${wrong.join(',')}: a JWT_SECRET verifies HS256/HS384/HS512 only`)
  }
  if (publicKey !== undefined) {
    if (!publicKey.includes('-----BEGIN')) {
      let text: string | undefined
      try { text = readFileSync(publicKey, 'utf8') } catch {}
      if (text === undefined || !text.includes('-----BEGIN')) {
        problems.push('JWT_PUBLIC_KEY: neither PEM text nor the path of a readable PEM file')
        return { jwt, problems }
      }
      publicKey = text
    }
    let type: string | undefined
    try { type = createPublicKey(publicKey).asymmetricKeyType } catch (err) {
      problems.push(`JWT_PUBLIC_KEY: not a usable public key (${(err as Error).message})`)
    }
    const hmac = algorithms.filter((a) => HMAC.test(a))
    if (hmac.length > 0) problems.push(`JWT_ALGORITHMS=${hmac.join(',')}: HS* algorithms with a public key would make the key an HMAC secret that anyone holding it could sign with`)
    if (type !== undefined) {
      const fits = (a: string): boolean => type === 'ec' ? EC.test(a) : (type === 'rsa' || type === 'rsa-pss') && RSA.test(a)
      const wrong = algorithms.filter((a) => !HMAC.test(a) && !fits(a))
      if (wrong.length > 0 && wrong.length === algorithms.length - hmac.length) {
        problems.push(`JWT_ALGORITHMS=${wrong.join(',')}: none of them fits the ${type} public key`)
      }
    }
  }
  return { jwt: { ...jwt, publicKey }, problems }
}

/** The accepted algorithms when none are configured: HS256 with a secret, RS256 and ES256 with a public key. */
export function defaultAlgorithms (hasPublicKey: boolean): string[] {
  return hasPublicKey ? ['RS256', 'ES256'] : ['HS256']
}

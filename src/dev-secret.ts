import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'

/**
 * Development only: with no JWT_SECRET, Herald makes a random one and keeps it in `.herald/dev-secret`
 * (git-ignored) so that `npm run token` signs tokens this server accepts. Never used when NODE_ENV=production.
 */
export const DEV_SECRET_FILE = resolve(process.cwd(), '.herald', 'dev-secret')

export function devSecret (create: boolean): string | undefined {
  try {
    const secret = readFileSync(DEV_SECRET_FILE, 'utf8').trim()
    if (secret.length >= 16) return secret
  } catch {}
  if (!create) return undefined
  const secret = randomBytes(32).toString('base64url')
  mkdirSync(dirname(DEV_SECRET_FILE), { recursive: true })
  writeFileSync(DEV_SECRET_FILE, secret + '\n', { mode: 0o600 })
  return secret
}

import { readFileSync } from 'node:fs'

function readVersion (): string {
  // src/version.ts runs from src/ (tsx) or dist/src/ (built): package.json is one or two levels up.
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'herald' && typeof pkg.version === 'string') return pkg.version
    } catch {}
  }
  return '0.0.0'
}

export const version = readVersion()

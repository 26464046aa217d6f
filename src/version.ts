import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * Herald's package root: one level above src/ (run by tsx) or two above dist/src/ (built). Files shipped beside
 * the code (package.json, public/, client/) are found from here.
 */
function findRoot (): { root: string, version: string } {
  for (const rel of ['../', '../../']) {
    const url = new URL(rel, import.meta.url)
    try {
      const pkg = JSON.parse(readFileSync(new URL('package.json', url), 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'herald' && typeof pkg.version === 'string') return { root: fileURLToPath(url), version: pkg.version }
    } catch {}
  }
  return { root: process.cwd(), version: '0.0.0' }
}

const found = findRoot()
export const version = found.version
export const packageRoot = found.root

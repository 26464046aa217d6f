import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { bundleForBrowsers } from '../build.js'

/**
 * Bundles the admin console (client/admin/src/main.ts) like the client library. Served at `/admin/admin.js`
 * (routes/admin.ts) when ADMIN_ENABLED is on. Its sources are not compiled by `tsc` (they use DOM types, see
 * client/admin/tsconfig.json), so from a build (dist/client/admin) it bundles the sources in the package.
 */
export async function buildAdmin (outfile?: string): Promise<string> {
  const entry = fileURLToPath(new URL('./src/main.ts', import.meta.url))
  return await bundleForBrowsers(existsSync(entry) ? entry : fileURLToPath(new URL('../../../client/admin/src/main.ts', import.meta.url)), outfile)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ?? 'dist/public/admin.js'
  await buildAdmin(out)
  process.stdout.write(`wrote ${out}\n`)
}

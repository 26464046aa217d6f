import { build } from 'esbuild'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * Bundles the admin console (client/admin/src/main.ts) into one minified ESM file for browsers, as client/build.ts does
 * the client library. Served at `/admin/admin.js` (routes/admin.ts) when ADMIN_ENABLED is on.
 */
export async function buildAdmin (outfile?: string): Promise<string> {
  const entry = fileURLToPath(new URL('./src/main.ts', import.meta.url))
  const fromSources = existsSync(entry) ? entry : fileURLToPath(new URL('../../../client/admin/src/main.ts', import.meta.url))
  const result = await build({
    entryPoints: [fromSources],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2020',
    minify: true,
    sourcemap: false,
    legalComments: 'none',
    write: outfile !== undefined,
    outfile,
    metafile: false
  })
  if (outfile !== undefined) return ''
  return result.outputFiles![0].text
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ?? 'dist/public/admin.js'
  await buildAdmin(out)
  process.stdout.write(`wrote ${out}\n`)
}

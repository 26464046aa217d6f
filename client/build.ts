import { build } from 'esbuild'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * Bundles one browser entry point into a single minified ESM file: no dependencies, no Node built-ins (platform
 * browser). Returns the bundle's text, or writes it to `outfile` (and returns '').
 */
export async function bundleForBrowsers (entry: string, outfile?: string): Promise<string> {
  const result = await build({
    entryPoints: [entry],
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

/**
 * Bundles the client library (client/index.ts). Run from the sources (tsx) it bundles index.ts; run from a `tsc`
 * build (dist/client) it bundles the compiled index.js next to it.
 */
export async function buildClient (outfile?: string): Promise<string> {
  const source = fileURLToPath(new URL('./index.ts', import.meta.url))
  return await bundleForBrowsers(existsSync(source) ? source : fileURLToPath(new URL('./index.js', import.meta.url)), outfile)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ?? 'dist/public/herald.js'
  await buildClient(out)
  process.stdout.write(`wrote ${out}\n`)
}

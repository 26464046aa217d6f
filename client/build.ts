import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'

/** Bundles the client library (client/index.ts) into one minified ESM file for browsers. */
export async function buildClient (outfile?: string): Promise<string> {
  const result = await build({
    entryPoints: [fileURLToPath(new URL('./index.ts', import.meta.url))],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2020',
    minify: true,
    sourcemap: false,
    write: outfile !== undefined,
    outfile,
    metafile: false
  })
  if (outfile !== undefined) return ''
  return result.outputFiles![0].text
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ?? 'dist/public/herald.js'
  await buildClient(out)
  process.stdout.write(`wrote ${out}\n`)
}

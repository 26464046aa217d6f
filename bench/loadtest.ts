/**
 * herald-loadtest: opens many WebSocket / SSE / long-poll connections to a Herald (or a benchmark peer),
 * publishes at a fixed rate and measures publish-to-deliver latency, throughput, loss and the server's cost.
 *
 *   npm run loadtest -- --url http://127.0.0.1:3000 --secret "$JWT_SECRET" -c 10000 -r 100 --rate 500 -d 30
 *
 * Loopback targets only unless --allow-host names another host. `--help` lists every option.
 */
import { fileURLToPath } from 'node:url'
import { devSecret } from '../src/dev-secret.js'
import { parseCli, resolveOptions, UsageError, USAGE, type LoadOptions } from './lib/options.js'
import { runLoadtest, type LoadSummary } from './lib/session.js'
import { formatSummary } from './lib/report.js'

export { runLoadtest, type LoadSummary }
export { resolveOptions, type LoadOptions }

/** Exit status: 0 when every expected event arrived and nothing failed, 1 otherwise, 2 for usage errors. */
export function verdict (s: LoadSummary): number {
  const bad = s.connect.failed > 0 || s.stages.some((st) => st.deliveries.lost > 0 || st.deliveries.duplicates > 0 || st.published.failed > 0)
  return bad ? 1 : 0
}

async function main (argv: string[]): Promise<number> {
  let options: LoadOptions
  try {
    const { options: partial, help } = parseCli(argv)
    if (help) { process.stdout.write(USAGE); return 0 }
    if ((partial.protocol ?? 'herald') === 'herald' && partial.secret === undefined && partial.tokens === undefined) {
      const dev = devSecret(false)
      if (dev !== undefined) partial.secret = dev
    }
    options = resolveOptions(partial)
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`herald-loadtest: ${err.message}\n\n${USAGE}`)
      return 2
    }
    throw err
  }
  const tty = options.progress === 'tty' || (options.progress === 'auto' && process.stderr.isTTY)
  const hardStop = setTimeout(() => {
    process.stderr.write(`\nherald-loadtest: hard cap of ${options.maxSeconds}s reached; stopping\n`)
    process.exit(3)
  }, (options.maxSeconds + 30) * 1000)
  hardStop.unref()
  let stopping = false
  const onSignal = (): void => {
    if (stopping) process.exit(130)
    stopping = true
    process.stderr.write('\nherald-loadtest: interrupted; closing connections (again to force)\n')
    setTimeout(() => process.exit(130), 5000).unref()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const summary = await runLoadtest(options, {
    onProgress: (line, final) => {
      if (tty) process.stderr.write('\r\x1b[K' + line + (final && line !== '' ? '\n' : ''))
      else if (line !== '') process.stderr.write(line + '\n')
    },
    onWarning: (m) => { process.stderr.write((tty ? '\r\x1b[K' : '') + 'herald-loadtest: warning: ' + m + '\n') }
  })
  if (tty) process.stderr.write('\r\x1b[K')
  if (options.json) process.stdout.write(JSON.stringify(summary, null, 2) + '\n')
  else process.stdout.write(formatSummary(summary) + '\n')
  return verdict(summary)
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code }, (err: unknown) => {
    process.stderr.write(`herald-loadtest: ${String((err as Error).stack ?? err)}\n`)
    process.exitCode = 1
  })
}

export { main }

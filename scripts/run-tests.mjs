// Runs test files with Node's own test runner (Node 20's --test takes no globs).
//   node scripts/run-tests.mjs            every test/**/*.test.ts except test/faults/ (npm test)
//   node scripts/run-tests.mjs --faults   test/faults/**/*.test.ts: cluster, failover and proxy scenarios (npm run test:faults)
//   node scripts/run-tests.mjs <files…>   just those files (--faults <files…>: run them as fault scenarios)
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'

function find (dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return find(path)
    return name.endsWith('.test.ts') ? [path] : []
  })
}

const argv = process.argv.slice(2)
const faults = argv.includes('--faults')
const only = argv.filter((a) => a !== '--faults')
const FAULTS = join('test', 'faults')
const files = only.length > 0
  ? only
  : faults
    ? find(FAULTS).sort()
    : find('test').filter((f) => !f.startsWith(FAULTS + '/')).sort()
// The fault scenarios each start a Redis Cluster of several processes: one file at a time.
const concurrency = faults ? 1 : 2
const timeout = faults ? 600_000 : 120_000
// The fault scenarios clean up in each test's own after hooks (no file-level hooks): once the last test is done, the
// runner ends the file's process (--test-force-exit), and test/support/leak-report.ts names whatever was still open
// then — so a handle left open shows up as that report, not as a file whose tests all passed running into its timeout.
const exitFlags = faults ? ['--import', './test/support/leak-report.ts', '--test-force-exit'] : []
const args = ['--import', 'tsx', ...exitFlags, '--test', `--test-concurrency=${concurrency}`, `--test-timeout=${timeout}`, ...files]
const result = spawnSync(process.execPath, args, { stdio: 'inherit' })
process.exit(result.status ?? 1)

/*
 * Loaded into each fault-scenario test process by scripts/run-tests.mjs --faults (--import), which also passes
 * --test-force-exit: once the file's last test has finished (each test's own after hooks stop the Redis processes,
 * Herald nodes, proxies and clients it started), the runner ends the process. Its exit is held here until what the
 * hooks began closing has closed, for at most GRACE_MS; whatever still holds the event loop open then — a socket, a
 * child process or a timer nobody stopped — is a leak, and is named on stderr, so it is seen and fixed rather than
 * turning a file whose tests all passed into one that never exits and runs into its timeout. (Not used by npm
 * test: with Node 20, --test-force-exit does not wait for a file's top-level after hooks, which some of those files
 * use.) A process that ends by itself reports nothing.
 */

interface HandleLike { constructor?: { name?: string }, hasRef?: () => boolean, remoteAddress?: string, remotePort?: number, localPort?: number, pid?: number, spawnargs?: string[] }

function openHandles (): HandleLike[] {
  const handles = (process as unknown as { _getActiveHandles: () => HandleLike[] })._getActiveHandles()
  return handles.filter((h) => h !== (process.stdout as unknown) && h !== (process.stderr as unknown) && h !== (process.stdin as unknown) &&
    (typeof h.hasRef !== 'function' || h.hasRef()))
}

function describe (h: HandleLike): string {
  const name = h.constructor?.name ?? 'handle'
  if (name === 'ChildProcess') return `child process ${String(h.pid)} (${(h.spawnargs ?? []).slice(0, 3).join(' ')})`
  if (name === 'Socket' && h.remotePort !== undefined) return `socket to ${String(h.remoteAddress)}:${h.remotePort} (local port ${String(h.localPort)})`
  if (name === 'Server') return 'a listening server'
  return name
}

function leaks (): string[] {
  const left = openHandles().map(describe)
  for (const kind of process.getActiveResourcesInfo()) if (kind === 'Timeout' || kind === 'Immediate') left.push(kind)
  return left
}

/** How long what the last after hooks began closing (a socket's end, a process's exit event) gets to finish. */
const GRACE_MS = 3000

// The runner's forced exit is held until what is left has closed, or GRACE_MS has passed: then what is still open
// is a leak, not a close under way.
const exit = process.exit.bind(process)
let exiting = false
process.exit = ((code?: number) => {
  if (exiting) return exit(code)
  exiting = true
  const deadline = Date.now() + GRACE_MS
  const check = (): void => {
    const left = leaks()
    if (left.length > 0 && Date.now() < deadline) { setTimeout(check, 50).unref(); return }
    if (left.length > 0) process.stderr.write(`leak report: ${process.argv[1] ?? 'this test file'} still had ${left.length} handle(s) open ${GRACE_MS} ms after its last test: ${left.join('; ')}\n`)
    exit(code)
  }
  check()
}) as typeof process.exit

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

/*
 * Where each pending timer was made, so a timer left running can be named by its origin: the global timer functions
 * (used by Herald, ioredis and the tests alike) are wrapped to note a stack — captured, and only formatted if it is
 * ever reported — and forget it when the timer fires (timeouts) or is cleared. The real Timeout is returned as is.
 */
const origins = new Map<NodeJS.Timeout, { ms: number, at: { stack?: string } }>()
type TimerFn = (fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => NodeJS.Timeout
function tracked (real: TimerFn, repeats: boolean): TimerFn {
  const wrapper = function (this: unknown, fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]): NodeJS.Timeout {
    const at: { stack?: string } = {}
    Error.captureStackTrace(at, wrapper)
    let timer: NodeJS.Timeout | undefined
    const callback = typeof fn !== 'function' || repeats ? fn : function (this: unknown, ...a: unknown[]) { if (timer !== undefined) origins.delete(timer); fn.apply(this, a) }
    timer = real(callback, ms, ...args)
    origins.set(timer, { ms: ms ?? 0, at })
    return timer
  }
  // util.promisify(setTimeout) and the like find what they look for.
  for (const key of Object.getOwnPropertySymbols(real)) (wrapper as unknown as Record<symbol, unknown>)[key] = (real as unknown as Record<symbol, unknown>)[key]
  return wrapper
}
function untracked (real: (timer?: NodeJS.Timeout | string | number) => void): (timer?: NodeJS.Timeout | string | number) => void {
  return (timer) => { if (typeof timer === 'object' && timer !== null) origins.delete(timer); real(timer) }
}
globalThis.setTimeout = tracked(globalThis.setTimeout as unknown as TimerFn, false) as unknown as typeof setTimeout
globalThis.setInterval = tracked(globalThis.setInterval as unknown as TimerFn, true) as unknown as typeof setInterval
globalThis.clearTimeout = untracked(globalThis.clearTimeout)
globalThis.clearInterval = untracked(globalThis.clearInterval)

/** Pending timers that keep the process alive, each with the place it was made (frames outside node's own). */
function liveTimers (): string[] {
  const out: string[] = []
  for (const [timer, { ms, at }] of origins) {
    if ((timer as unknown as { _destroyed?: boolean })._destroyed === true || !timer.hasRef()) continue
    const frames = (at.stack ?? '').split('\n').slice(1).map((l) => l.trim().replace(/^at /, '')).filter((l) => !l.includes('node:internal')).slice(0, 4)
    out.push(`Timeout (${ms} ms) made at ${frames.join(' < ')}`)
  }
  return out
}

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
  const timers = liveTimers()
  left.push(...timers)
  // Timers made some other way (node's own timers module, a library's private copy) are only counted.
  const counted = process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length
  for (let i = timers.length; i < counted; i++) left.push('Timeout (origin not recorded)')
  for (const kind of process.getActiveResourcesInfo()) if (kind === 'Immediate') left.push(kind)
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

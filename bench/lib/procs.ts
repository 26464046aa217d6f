import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync, openSync, closeSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sleep } from './publisher.js'

const require = createRequire(import.meta.url)
export const TSX_LOADER = require.resolve('tsx')

/** A child process this benchmark started (and only ever stops by its own PID). */
export interface Managed {
  name: string
  pid: number
  proc: ChildProcess
  log: string
  stop: () => Promise<void>
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/**
 * Spawns `command` through `bash -c 'ulimit -n …; exec …'` so the open-files limit is raised as far as the hard
 * limit allows; `exec` keeps the PID the program's own.
 */
export function spawnWithFds (name: string, command: string[], env: Record<string, string>, cwd: string, logDir: string): Managed {
  const log = join(logDir, name.replace(/[^A-Za-z0-9_.-]/g, '_') + '.log')
  const fd = openSync(log, 'w')
  const script = 'ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"'
  const proc = spawn('bash', ['-c', script, 'bash', ...command], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', fd, fd] })
  closeSync(fd)
  const managed: Managed = {
    name,
    pid: proc.pid!,
    proc,
    log,
    stop: async () => { await stopChild(proc, 8000) }
  }
  return managed
}

/** SIGTERM, then SIGKILL after `graceMs`, to this child only. */
export async function stopChild (proc: ChildProcess, graceMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  proc.kill('SIGTERM')
  const timer = setTimeout(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') }, graceMs)
  await exited
  clearTimeout(timer)
}

/** Waits until GET url answers 200 (or the child exits, or the time is up). */
export async function waitHttp (url: string, proc: ChildProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`process exited (${String(proc.exitCode ?? proc.signalCode)}) before ${url} answered`)
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status === 200) return
    } catch {}
    await sleep(100)
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`)
}

/** A private redis-server on a free loopback port (never the machine's 6379), no persistence. */
export async function startRedis (logDir: string): Promise<Managed & { url: string, port: number }> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-redis-'))
  const m = spawnWithFds(`redis-${port}`, ['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning', '--maxclients', '1000'], {}, dir, logDir)
  const deadline = Date.now() + 10_000
  for (;;) {
    if (m.proc.exitCode !== null) throw new Error(`redis-server exited: ${readFileSync(m.log, 'utf8').slice(-500)}`)
    const ping = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' })
    if (ping.stdout?.trim() === 'PONG') break
    if (Date.now() > deadline) { await m.stop(); throw new Error('redis-server did not start within 10 s') }
    await sleep(50)
  }
  const stop = m.stop
  return {
    ...m,
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: async () => { await stop(); rmSync(dir, { recursive: true, force: true }) }
  }
}

export function hasRedis (): boolean {
  return spawnSync('redis-server', ['--version']).status === 0
}

/** Steal above this (cores, over a measurement) is reported: the timings were taken on a shared, busy host. */
export const STEAL_WARN_CORES = 0.05

/**
 * CPU seconds of the whole machine (all cores) from /proc/stat: `busy` run by this machine's processes and
 * interrupts, and `steal`, the time a virtual machine's CPUs were ready to run but the hypervisor ran something
 * else (another guest): the machine is shared, and steal shows when it was.
 */
export function machineCpuSeconds (): { busy: number, steal: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]
    const v = line.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal (in USER_HZ, 100 a second)
    return { busy: (v[0] + v[1] + v[2] + v[5] + v[6]) / 100, steal: (v[7] ?? 0) / 100 }
  } catch {
    return undefined
  }
}

function newestMtime (dir: string): number {
  let newest = 0
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    const st = statSync(path)
    newest = Math.max(newest, st.isDirectory() ? newestMtime(path) : name.endsWith('.ts') ? st.mtimeMs : 0)
  }
  return newest
}

/**
 * Whether the built server (dist/src/server.js) is newer than every .ts file of src/, routes/ and client/ — what
 * the tests and the soak run then (the production artifact); `stale` names the directories that are newer.
 */
export function builtServer (root: string): { fresh: boolean, stale: string[], missing: boolean } {
  let builtAt: number
  try {
    builtAt = statSync(join(root, 'dist', 'src', 'server.js')).mtimeMs
  } catch {
    return { fresh: false, stale: [], missing: true }
  }
  const stale = ['src', 'routes', 'client'].filter((dir) => newestMtime(join(root, dir)) > builtAt)
  return { fresh: stale.length === 0, stale, missing: false }
}

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { entryArgs, freePort, sleep } from '../helper.js'

/**
 * The standalone server (src/server.ts) and the token CLI as real processes. Each runs in its own temporary
 * directory (so a development secret never lands in the checkout), with only the environment it is given.
 */

const SERVER = 'src/server.ts'

export interface Proc {
  child: ChildProcess
  cwd: string
  /** stdout and stderr interleaved as received. */
  output: () => string
  stdout: () => string
  stderr: () => string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Kills it (by PID) if still running; waits for the exit. */
  kill: (signal?: NodeJS.Signals) => Promise<void>
}

export function tempDir (): string { return mkdtempSync(join(tmpdir(), 'herald-server-test-')) }

/** Spawns an entry point (built JS, or TS through tsx: see entryArgs) with only the given environment (plus PATH, HOME, TMPDIR). */
export function spawnTs (script: 'src/server.ts' | 'src/cli/token.ts', args: string[], opts: { env?: Record<string, string>, cwd?: string } = {}): Proc {
  const cwd = opts.cwd ?? tempDir()
  const base: Record<string, string> = {}
  for (const key of ['PATH', 'HOME', 'TMPDIR']) if (process.env[key] !== undefined) base[key] = process.env[key]!
  const child = spawn(process.execPath, [...entryArgs(script), ...args], { cwd, env: { ...base, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); stdout += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); stderr += d.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      // Let the pipes drain before reporting the exit.
      setTimeout(() => resolve({ code, signal }), 50)
    })
  })
  const proc: Proc = {
    child,
    cwd,
    output: () => out,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, signal)
      await withTimeout(exited, 5000, 'process exit after ' + signal)
    }
  }
  return proc
}

export async function withTimeout<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms) })])
  } finally {
    clearTimeout(timer)
  }
}

export interface Server extends Proc { port: number, url: string, wsUrl: string }

/** Starts src/server.ts on a free port and waits until /healthz answers (or fails with the process's output). */
export async function startServer (env: Record<string, string> = {}, cwd?: string): Promise<Server> {
  const port = await freePort()
  const proc = spawnTs(SERVER, [], { env: { PORT: String(port), ...env }, cwd })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 20_000
  for (;;) {
    let problem: string | undefined
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) problem = 'server exited before listening'
    else if (Date.now() > deadline) problem = 'server did not listen within 20 s'
    if (problem !== undefined) {
      await proc.kill()
      if (cwd === undefined) rmSync(proc.cwd, { recursive: true, force: true })
      throw new Error(problem + ':\n' + proc.output())
    }
    try {
      const res = await fetch(`${url}/healthz`)
      if (res.status === 200) break
    } catch {}
    await sleep(50)
  }
  return { ...proc, port, url, wsUrl: `ws://127.0.0.1:${port}` }
}

export function cleanup (t: TestContext, proc: Proc): void {
  t.after(async () => {
    await proc.kill()
    rmSync(proc.cwd, { recursive: true, force: true })
  })
}


import { readdirSync, readFileSync } from 'node:fs'
import { execSync } from 'node:child_process'

/** CPU seconds (user + system) and resident memory of a process at one moment. */
export interface ProcSample { at: number, cpuSeconds: number, rssBytes: number }

let clockTicks = 0
function ticksPerSecond (): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(execSync('getconf CLK_TCK', { encoding: 'utf8' }).trim()) || 100
    } catch {
      clockTicks = 100
    }
  }
  return clockTicks
}

/** One process's CPU seconds and RSS from /proc; undefined when it is gone. */
function sampleOne (pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces: fields are counted after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const rss = /VmRSS:\s+(\d+) kB/.exec(status)
    return { at: Date.now(), cpuSeconds: (utime + stime) / ticksPerSecond(), rssBytes: rss === null ? 0 : Number(rss[1]) * 1024 }
  } catch {
    return undefined
  }
}

/** The live children of a process (every thread's list), from /proc/<pid>/task/<tid>/children. */
function childrenOf (pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
      try {
        return readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number)
      } catch {
        return []
      }
    })
  } catch {
    return []
  }
}

/**
 * CPU seconds (utime + stime) and RSS of a process and its live descendants (a server run with WORKERS=N is a
 * primary and N workers); undefined when the process itself is gone.
 */
export function sampleProc (pid: number): ProcSample | undefined {
  const own = sampleOne(pid)
  if (own === undefined) return undefined
  const seen = new Set([pid])
  const queue = childrenOf(pid)
  for (let i = 0; i < queue.length && seen.size < 1024; i++) {
    const child = queue[i]
    if (seen.has(child)) continue
    seen.add(child)
    const s = sampleOne(child)
    if (s === undefined) continue
    own.cpuSeconds += s.cpuSeconds
    own.rssBytes += s.rssBytes
    queue.push(...childrenOf(child))
  }
  return own
}

/** Reads Herald's /metrics: herald_process_cpu_seconds_total and herald_process_resident_memory_bytes. */
export async function sampleMetrics (target: string, timeoutMs = 2000): Promise<ProcSample | undefined> {
  try {
    const res = await fetch(target + '/metrics', { signal: AbortSignal.timeout(timeoutMs) })
    if (res.status !== 200) return undefined
    const text = await res.text()
    const value = (name: string): number | undefined => {
      const m = new RegExp('^' + name + '(?:\\{[^}]*\\})? ([0-9.eE+-]+)', 'm').exec(text)
      return m === null ? undefined : Number(m[1])
    }
    const cpu = value('[a-z_]*process_cpu_seconds_total') ??
      ((value('[a-z_]*process_cpu_user_seconds_total') ?? NaN) + (value('[a-z_]*process_cpu_system_seconds_total') ?? NaN))
    const rss = value('[a-z_]*process_resident_memory_bytes')
    if (cpu === undefined || Number.isNaN(cpu) || rss === undefined) return undefined
    return { at: Date.now(), cpuSeconds: cpu, rssBytes: rss }
  } catch {
    return undefined
  }
}

/** Where server figures come from: /proc when a PID is known, else the first target's /metrics. */
export class ServerProbe {
  private metricsWork = true

  constructor (private readonly pid: number | undefined, private readonly target: string) {}

  get source (): string { return this.pid !== undefined ? `/proc/${this.pid}` : `${this.target}/metrics` }

  async sample (): Promise<ProcSample | undefined> {
    if (this.pid !== undefined) return sampleProc(this.pid)
    if (!this.metricsWork) return undefined
    const s = await sampleMetrics(this.target)
    if (s === undefined) this.metricsWork = false
    return s
  }
}

/** The soft and hard limits on open files of this process (from /proc/self/limits). */
export function fdLimits (): { soft: number, hard: number } | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))
    if (line === undefined) return undefined
    const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/)
    const n = (v: string): number => v === 'unlimited' ? Number.POSITIVE_INFINITY : Number(v)
    return { soft: n(soft), hard: n(hard) }
  } catch {
    return undefined
  }
}

import { execFile } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { sampleProc } from './server-stats.js'
import { TSX_LOADER, builtServer } from './procs.js'

/**
 * What the soak benchmark needs to know about the Herald process and its private redis-server: how to start
 * Herald (built or TypeScript) and one reading of its memory, descriptors, connections and Redis keys.
 */

/**
 * Node arguments that run Herald's server, decided as test/helper.ts entryArgs does: the built
 * dist/src/server.js when it is newer than every .ts file of src/, routes/ and client/; otherwise
 * src/server.ts through tsx (in this same process: `node --import tsx`, so the PID is Herald's).
 */
export function heraldEntry (root: string): { args: string[], kind: 'built' | 'tsx', why: string } {
  const built = join(root, 'dist', 'src', 'server.js')
  const tsx = ['--import', TSX_LOADER, join(root, 'src', 'server.ts')]
  const state = builtServer(root)
  if (state.fresh) return { args: [built], kind: 'built', why: 'dist/src/server.js is newer than src/, routes/ and client/' }
  return { args: tsx, kind: 'tsx', why: state.missing ? 'dist/src/server.js is missing' : `dist/src/server.js is older than ${state.stale.join(', ')}/` }
}

/** Prometheus text → one value per series (`name{labels}` as written). */
export function parseMetrics (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const sp = line.lastIndexOf(' ')
    if (sp < 0) continue
    const v = Number(line.slice(sp + 1))
    if (Number.isFinite(v)) out.set(line.slice(0, sp), v)
  }
  return out
}

/** The sum of every series of `name` whose labels include all of `labels` (undefined when there is none). */
export function metric (m: Map<string, number>, name: string, labels: Record<string, string> = {}): number | undefined {
  let sum: number | undefined
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  for (const [key, v] of m) {
    const brace = key.indexOf('{')
    const n = brace < 0 ? key : key.slice(0, brace)
    if (n !== name) continue
    if (want.some((w) => !key.includes(w))) continue
    sum = (sum ?? 0) + v
  }
  return sum
}

/** Every series of `name`, by the value of one label. */
export function byLabel (m: Map<string, number>, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {}
  const re = new RegExp(label + '="([^"]*)"')
  for (const [key, v] of m) {
    if (!key.startsWith(name + '{')) continue
    const l = re.exec(key)
    if (l !== null) out[l[1]] = (out[l[1]] ?? 0) + v
  }
  return out
}

export async function scrape (base: string, timeoutMs = 5000): Promise<Map<string, number> | undefined> {
  try {
    const res = await fetch(base + '/metrics', { signal: AbortSignal.timeout(timeoutMs) })
    const text = await res.text()
    return res.status === 200 ? parseMetrics(text) : undefined
  } catch {
    return undefined
  }
}

/** One redis-cli command against the private redis-server (asynchronous: the load keeps running meanwhile). */
export async function redisCli (port: number, args: string[], timeoutMs = 5000): Promise<string | undefined> {
  return await new Promise((resolve) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout) => {
      resolve(err === null ? stdout.trim() : undefined)
    })
  })
}

export function countFds (pid: number): number | undefined {
  try { return readdirSync(`/proc/${pid}/fd`).length } catch { return undefined }
}

export function vmRssBytes (pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? undefined : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

export interface ServerReading {
  rssBytes?: number
  cpuSeconds?: number
  heapUsedBytes?: number
  /** Which metric the heap figure came from. */
  heapSource?: string
  fds?: number
  connections: Record<string, number>
  subscriptions?: number
  channels?: number
  lagP99Ms?: number
  evictions: Record<string, number>
  heartbeatTimeouts?: number
  errorsByCode: Record<string, number>
  delivered?: number
  published?: number
  redisKeys?: number
  redisUsedBytes?: number
  metricsOk: boolean
}

export async function readServer (pid: number, base: string, redisPort: number): Promise<ServerReading> {
  const [m, dbsize, info] = await Promise.all([scrape(base), redisCli(redisPort, ['dbsize']), redisCli(redisPort, ['info', 'memory'])])
  const proc = sampleProc(pid)
  const r: ServerReading = {
    rssBytes: vmRssBytes(pid),
    cpuSeconds: proc?.cpuSeconds,
    fds: countFds(pid),
    connections: {},
    evictions: {},
    errorsByCode: {},
    metricsOk: m !== undefined
  }
  if (dbsize !== undefined && /^\d+$/.test(dbsize)) r.redisKeys = Number(dbsize)
  const used = info === undefined ? null : /used_memory:(\d+)/.exec(info)
  if (used !== null) r.redisUsedBytes = Number(used[1])
  if (m !== undefined) {
    r.heapUsedBytes = metric(m, 'herald_nodejs_heap_size_used_bytes')
    r.heapSource = 'herald_nodejs_heap_size_used_bytes'
    if (r.heapUsedBytes === undefined) {
      r.heapUsedBytes = metric(m, 'herald_process_resident_memory_bytes')
      r.heapSource = r.heapUsedBytes === undefined ? undefined : 'herald_process_resident_memory_bytes'
    }
    r.connections = byLabel(m, 'herald_connections', 'transport')
    r.subscriptions = metric(m, 'herald_subscriptions')
    r.channels = metric(m, 'herald_channels')
    const lag = metric(m, 'herald_nodejs_eventloop_lag_p99_seconds')
    if (lag !== undefined) r.lagP99Ms = lag * 1000
    for (const [key, v] of m) {
      if (!key.startsWith('herald_evictions_total{')) continue
      const t = /transport="([^"]*)"/.exec(key)?.[1] ?? '?'
      const reason = /reason="([^"]*)"/.exec(key)?.[1] ?? '?'
      r.evictions[`${t}/${reason}`] = v
    }
    r.heartbeatTimeouts = metric(m, 'herald_heartbeat_timeouts_total')
    r.errorsByCode = byLabel(m, 'herald_errors_total', 'code')
    r.delivered = metric(m, 'herald_events_delivered_total')
    r.published = metric(m, 'herald_events_published_total')
  }
  return r
}

/** Lines of Herald's pino log at warn level or above, grouped by message (count, first time, one example). */
export function logFindings (logPath: string): Array<{ level: string, msg: string, count: number, example: string }> {
  let text = ''
  try { text = readFileSync(logPath, 'utf8') } catch { return [] }
  const groups = new Map<string, { level: string, msg: string, count: number, example: string }>()
  const names: Record<number, string> = { 40: 'warn', 50: 'error', 60: 'fatal' }
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    let level = 'text'
    let msg = line.slice(0, 160)
    try {
      const j = JSON.parse(line) as { level?: number, msg?: string, err?: { message?: string } }
      if (typeof j.level === 'number' && j.level < 40) continue
      level = names[j.level ?? 0] ?? String(j.level)
      msg = (j.msg ?? '') + (j.err?.message !== undefined ? ': ' + j.err.message.slice(0, 120) : '')
    } catch {}
    const key = level + ' ' + msg
    const g = groups.get(key)
    if (g !== undefined) g.count++
    else groups.set(key, { level, msg, count: 1, example: line.slice(0, 400) })
  }
  return [...groups.values()].sort((a, b) => b.count - a.count)
}

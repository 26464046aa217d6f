import { spawn, type ChildProcess } from 'node:child_process'
import { request as httpRequest, type ClientRequest } from 'node:http'
import { createConnection } from 'node:net'
import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { TestContext } from 'node:test'
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { findProxy, startProxy, childPids, type ProxyKind, type RunningProxy, type StartProxyOptions } from '../../deploy/proxies.js'

/*
 * What the proxy tests (test/faults/proxies*.test.ts) share: the proxies as test fixtures, an SSE reader that
 * records heartbeats and does not wait for the response head (a buffering proxy may hold even that), WebSocket
 * attempts that report refusals, and a fleet of WebSocket clients in a child process (run this file with
 * `--herald-proxy-clients`) for the 5,000-connection test. Light imports only: the fleet child loads this file.
 */

export type { ProxyKind, RunningProxy }
export const PROXIES: ProxyKind[] = ['nginx', 'haproxy']

/** Why the tests of `kind` cannot run here, or undefined; under CI=true a missing proxy is an error, not a skip. */
export function proxySkipReason (kind: ProxyKind): string | undefined {
  if (findProxy(kind) !== undefined) return undefined
  if (process.env.CI === 'true') throw new Error(`${kind} is not installed and CI=true: .ci/run must install it`)
  return `${kind} not found (apt-get install ${kind}); skipping its proxy tests`
}

/**
 * The shipped config of `kind` in front of `upstreams`, stopped when the test ends. HERALD_PROXY_LOG=1 prints the
 * proxy's output and access log (nginx) as diagnostics first.
 */
export async function useProxy (t: TestContext, kind: ProxyKind, opts: StartProxyOptions): Promise<RunningProxy> {
  const proxy = await startProxy(kind, opts)
  t.after(async () => {
    if (process.env.HERALD_PROXY_LOG === '1') {
      let access = ''
      try { access = readFileSync(join(proxy.dir, 'access.log'), 'utf8') } catch {}
      t.diagnostic(`${kind} output:\n${proxy.output()}${access}`)
    }
    await proxy.stop()
  })
  return proxy
}

/** Read-timeout directives of each proxy's shipped file, for tests that shorten them all to one value. */
export function readTimeouts (kind: ProxyKind, value: string): Record<string, string> {
  return kind === 'nginx'
    ? { proxy_read_timeout: value, proxy_send_timeout: value }
    : { 'timeout client': value, 'timeout server': value, 'timeout tunnel': value }
}

/** A command on HAProxy's runtime API (the stats socket the render put in its run directory). */
export async function haproxyCommand (proxy: RunningProxy, command: string): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = createConnection(join(proxy.dir, 'haproxy.sock'))
    let out = ''
    socket.on('data', (d: Buffer) => { out += d.toString() })
    socket.once('error', reject)
    socket.once('end', () => resolve(out))
    socket.once('connect', () => socket.write(command + '\n'))
  })
}

/** The node id in a connection id (`<node>-<n>`, src/session/registry.ts). */
export function nodeOf (clientId: string): string { return clientId.slice(0, clientId.lastIndexOf('-')) }

/** Resident memory (KiB) of a process and its direct children (a proxy's master and workers). */
export function rssKiB (pid: number): number {
  let total = 0
  for (const p of [pid, ...childPids(pid)]) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))
      total += m === null ? 0 : Number(m[1])
    } catch {}
  }
  return total
}

export function percentiles (values: number[]): { n: number, p50: number, p90: number, max: number } {
  const s = [...values].sort((a, b) => a - b)
  const at = (q: number): number => s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]
  return { n: s.length, p50: at(0.5), p90: at(0.9), max: s.length === 0 ? NaN : s[s.length - 1] }
}

export function round (ms: number): number { return Math.round(ms * 10) / 10 }

// ---------------------------------------------------------------- SSE

export interface SseRecord { at: number, id?: string, data?: any, comment?: string }

/**
 * An SSE stream read with node:http: every message and comment (`: hb`) with its arrival time (performance.now()),
 * the status, the end. It starts at once and never waits for the head, which a buffering proxy may hold back.
 */
export class SseProbe {
  status?: number
  /** JSON body of a refusal. */
  body?: any
  readonly records: SseRecord[] = []
  ended = false
  endedAt?: number
  error?: string
  private readonly req: ClientRequest
  private waiters: Array<() => void> = []

  constructor (base: string, channels: string[], opts: { token: string, lastEventId?: string, localAddress?: string }) {
    const qs = new URLSearchParams()
    for (const c of channels) qs.append('channel', c)
    const headers: Record<string, string> = { authorization: `Bearer ${opts.token}`, accept: 'text/event-stream' }
    if (opts.lastEventId !== undefined) headers['last-event-id'] = opts.lastEventId
    this.req = httpRequest(`${base}/v1/sse?${qs.toString()}`, { headers, agent: false, localAddress: opts.localAddress })
    this.req.on('response', (res) => {
      this.status = res.statusCode
      res.setEncoding('utf8')
      let buf = ''
      res.on('data', (chunk: string) => {
        const at = performance.now()
        buf += chunk
        if (this.status !== 200) return
        let end
        while ((end = buf.indexOf('\n\n')) !== -1) {
          const block = buf.slice(0, end)
          buf = buf.slice(end + 2)
          const record: SseRecord = { at }
          const data: string[] = []
          for (const line of block.split('\n')) {
            if (line.startsWith('id: ')) record.id = line.slice(4)
            else if (line.startsWith('data: ')) data.push(line.slice(6))
            else if (line.startsWith(':')) record.comment = line.slice(1).trim()
          }
          if (data.length > 0) record.data = JSON.parse(data.join('\n'))
          if (record.data !== undefined || record.comment !== undefined) this.records.push(record)
        }
        this.wake()
      })
      res.on('end', () => {
        if (this.status !== 200) { try { this.body = JSON.parse(buf) } catch { this.body = buf } }
        this.finish()
      })
      res.on('error', (err) => { this.error = err.message; this.finish() })
    })
    this.req.on('error', (err) => { this.error = err.message; this.finish() })
    this.req.end()
  }

  /** Server frames received, in order. */
  frames (): any[] { return this.records.filter((r) => r.data !== undefined).map((r) => r.data) }
  events (channel?: string): any[] { return this.frames().filter((f) => f.type === 'event' && (channel === undefined || f.channel === channel)) }
  heartbeats (): number { return this.records.filter((r) => r.comment === 'hb').length }
  get lastEventId (): string | undefined { return this.records.filter((r) => r.id !== undefined).pop()?.id }
  get connectedClient (): string | undefined { return this.frames().find((f) => f.type === 'connected')?.client }

  /** Waits until `check` holds (checked on every chunk and at the end); fails after `timeoutMs` saying `what`. */
  async until (check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!check()) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what}; status ${String(this.status)}, ended ${String(this.ended)}, last: ${JSON.stringify(this.records.slice(-3))}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  close (): void { this.req.destroy() }

  private finish (): void {
    if (this.ended) return
    this.ended = true
    this.endedAt = performance.now()
    this.wake()
  }

  private wake (): void { for (const w of this.waiters.splice(0)) w() }
}

// ---------------------------------------------------------------- WebSocket

export type WsAttempt = { ws: WebSocket, frames: any[] } | { status: number, body: any }

/** Opens a WebSocket; resolves with the socket (and a live list of its frames) or with the refusal's status and JSON body. */
export async function wsAttempt (wsUrl: string, opts: { token?: string, query?: boolean, localAddress?: string, headers?: Record<string, string> } = {}): Promise<WsAttempt> {
  const headers = { ...(opts.token !== undefined && opts.query !== true ? { authorization: `Bearer ${opts.token}` } : {}), ...opts.headers }
  const url = `${wsUrl}/v1/ws${opts.token !== undefined && opts.query === true ? `?token=${opts.token}` : ''}`
  const ws = new WebSocket(url, { headers, localAddress: opts.localAddress, perMessageDeflate: false })
  const frames: any[] = []
  ws.on('message', (data) => { frames.push(JSON.parse(data.toString())) })
  return await new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, frames }))
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => {
        let parsed: unknown = body
        try { parsed = JSON.parse(body) } catch {}
        resolve({ status: res.statusCode ?? 0, body: parsed })
      })
    })
    ws.once('error', reject)
  })
}

// ---------------------------------------------------------------- a fleet of WebSockets in a child process

export interface FleetOptions {
  /** ws://host:port of the proxy */
  url: string
  count: number
  channel: string
  secret: string
  /** Connection attempts in flight at once. */
  concurrency?: number
  /** Token subjects, used in turn (MAX_CONNECTIONS_PER_SUB applies per subject and node). */
  subjects?: number
}

export interface FleetReady { type: 'ready', subscribed: number, failed: number, byNode: Record<string, number>, failures: string[], ms: number }
export interface FleetAll { type: 'all', offset: number, lastAt: number, at: number[] }

const SELF = fileURLToPath(import.meta.url)
const FLEET_FLAG = '--herald-proxy-clients'

/**
 * `count` WebSockets through a proxy, held by a child process with its own descriptors: each connects, subscribes
 * to `channel` and reports; the parent then publishes and waits for `all` (every socket has the event).
 */
export class Fleet {
  private lines: any[] = []
  private waiters: Array<() => void> = []
  private stderr = ''

  private constructor (readonly child: ChildProcess) {
    let buf = ''
    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (chunk: string) => {
      buf += chunk
      let at
      while ((at = buf.indexOf('\n')) !== -1) {
        this.lines.push(JSON.parse(buf.slice(0, at)))
        buf = buf.slice(at + 1)
      }
      this.wake()
    })
    child.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-20_000) })
    child.once('exit', () => this.wake())
  }

  static start (t: TestContext, opts: FleetOptions): Fleet {
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
    const child = spawn(process.execPath, ['--import', tsx, SELF, FLEET_FLAG, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'pipe'] })
    const fleet = new Fleet(child)
    t.after(async () => { await fleet.stop() })
    return fleet
  }

  /** Waits for the first report of `type` matching `pred`. */
  async next<T> (type: string, pred: (line: any) => boolean = () => true, timeoutMs = 120_000): Promise<T> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.lines.find((l) => l.type === type && pred(l))
      if (found !== undefined) return found as T
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`the client fleet exited (${String(this.child.exitCode ?? this.child.signalCode)}) before "${type}":\n${this.stderr}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for the fleet's "${type}"; last reports: ${JSON.stringify(this.lines.slice(-3))}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** Asks for a status report (open, subscribed, closed, events per offset) and returns it. */
  async status (): Promise<any> {
    const n = this.lines.length
    this.child.stdin!.write('status\n')
    return await this.next('status', (l) => this.lines.indexOf(l) >= n, 10_000)
  }

  async stop (): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()))
    this.child.kill('SIGTERM')
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }

  private wake (): void { for (const w of this.waiters.splice(0)) w() }
}

async function fleetMain (opts: FleetOptions): Promise<void> {
  const out = (o: object): void => { process.stdout.write(JSON.stringify(o) + '\n') }
  const sign = createSigner({ key: opts.secret, expiresIn: 3600_000 })
  const subjects = opts.subjects ?? 100
  const tokens = Array.from({ length: subjects }, (_, i) => sign({ sub: `fleet-${i}`, subscribe: [opts.channel] }))
  const sockets: WebSocket[] = []
  const byNode: Record<string, number> = {}
  const failures: string[] = []
  const received = new Map<number, number[]>()
  let subscribed = 0
  let failed = 0
  let closed = 0
  const closeCodes: Record<number, number> = {}
  const started = Date.now()

  function one (i: number): Promise<void> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`${opts.url}/v1/ws`, { headers: { authorization: `Bearer ${tokens[i % subjects]}` }, perMessageDeflate: false })
      let done = false
      const settle = (failure?: string): void => {
        if (done) return
        done = true
        if (failure !== undefined) { failed++; if (failures.length < 10) failures.push(failure) }
        resolve()
      }
      ws.on('message', (data) => {
        const frame = JSON.parse(data.toString())
        if (frame.type === 'connected') {
          const node = nodeOf(frame.client)
          byNode[node] = (byNode[node] ?? 0) + 1
          ws.send(JSON.stringify({ type: 'subscribe', channel: opts.channel }))
        } else if (frame.type === 'subscribed') {
          subscribed++
          settle()
        } else if (frame.type === 'event') {
          const at = received.get(frame.offset) ?? []
          at.push(Date.now())
          received.set(frame.offset, at)
          if (at.length === subscribed) out({ type: 'all', offset: frame.offset, lastAt: Date.now(), at })
        } else if (frame.type === 'error') {
          settle('error frame: ' + JSON.stringify(frame))
        }
      })
      ws.once('unexpected-response', (_req, res) => {
        let body = ''
        res.on('data', (c: Buffer) => { body += c.toString() })
        res.on('end', () => settle(`HTTP ${String(res.statusCode)} ${body.slice(0, 200)}`))
      })
      ws.on('error', (err) => settle('error: ' + err.message))
      ws.on('close', (code) => {
        closed++
        closeCodes[code] = (closeCodes[code] ?? 0) + 1
        settle(`closed ${code} before subscribing`)
      })
      sockets.push(ws)
    })
  }

  let next = 0
  await Promise.all(Array.from({ length: opts.concurrency ?? 100 }, async () => {
    while (next < opts.count) await one(next++)
  }))
  out({ type: 'ready', subscribed, failed, byNode, failures, ms: Date.now() - started } satisfies FleetReady)
  let input = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk: string) => {
    input += chunk
    let at
    while ((at = input.indexOf('\n')) !== -1) {
      const cmd = input.slice(0, at)
      input = input.slice(at + 1)
      if (cmd === 'status') {
        const open = sockets.filter((s) => s.readyState === WebSocket.OPEN).length
        out({ type: 'status', open, subscribed, failed, closed, closeCodes, received: Object.fromEntries([...received].map(([o, a]) => [o, a.length])) })
      }
    }
  })
  process.on('SIGTERM', () => {
    for (const s of sockets) s.terminate()
    process.exit(0)
  })
}

if (process.argv[2] === FLEET_FLAG && process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url) {
  fleetMain(JSON.parse(process.argv[3]) as FleetOptions).catch((err) => {
    process.stderr.write(String((err as Error).stack ?? err) + '\n')
    process.exit(1)
  })
}

import type { Broker } from '../src/bus/broker.js'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyInstance } from 'fastify'
import { createSigner } from 'fast-jwt'
import WebSocket from 'ws'
import herald, { type HeraldOptions } from '../src/app.js'
import { defaultConfig, type DeepPartial, type HeraldConfig } from '../src/config.js'
import { heraldServerOptions } from '../src/server-options.js'
import { builtServer, freePort, hasRedis } from '../bench/lib/procs.js'
import { checkServerFrame, FrameViolation } from './support/frames.js'

export { freePort }

export const SECRET = 'test-secret-0123456789abcdef'

/** The repository's root (where package.json is). */
export const ROOT = fileURLToPath(new URL('..', import.meta.url))

let compiledFresh: boolean | undefined

/**
 * Node arguments that run one of Herald's entry points as a real process. `npm test` compiles first, so this is
 * the built JavaScript — what production runs, and quick to start on busy cores — unless it is missing or older
 * than the sources (a single test file run after an edit), then the TypeScript through tsx.
 */
export function entryArgs (entry: 'src/server.ts' | 'src/cli/token.ts'): string[] {
  const built = join(ROOT, 'dist', entry.replace(/\.ts$/, '.js'))
  compiledFresh ??= builtServer(ROOT).fresh
  if (compiledFresh) return [built]
  return ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href, join(ROOT, entry)]
}

/** Signs a test token; everything allowed unless the claims say otherwise. */
export function token (claims: Record<string, unknown> = {}, opts: { expiresInMs?: number, key?: string } = {}): string {
  const sign = createSigner({ key: opts.key ?? SECRET, expiresIn: opts.expiresInMs ?? 3600_000 })
  return sign({ sub: 'tester', subscribe: ['*'], publish: ['*'], ...claims })
}

// ---------------------------------------------------------------- Redis

export interface RedisServer {
  port: number
  url: string
  proc: ChildProcess
  /** Stops it with SIGKILL (a crash) or SIGTERM. */
  stop: (signal?: NodeJS.Signals) => Promise<void>
  /** Starts it again on the same port and directory (AOF data, if any, is reloaded). */
  restart: () => Promise<void>
}

/** redis-server is on PATH (the benchmark's check). */
export const hasRedisServer = hasRedis

/**
 * Why a Redis-backed test cannot run, or undefined when it can. Under CI=true a missing redis-server is an
 * error, not a skip: .ci/run installs it.
 */
export function redisSkipReason (): string | undefined {
  if (hasRedisServer()) return undefined
  if (process.env.CI === 'true') throw new Error('redis-server is not on PATH and CI=true: .ci/run must install it')
  return 'redis-server not found on PATH (apt-get install redis-server); skipping Redis tests'
}


/**
 * Starts a private redis-server on a free loopback port (never the machine's shared 6379) and stops it when
 * the test ends. `aof: true` persists with appendfsync always, so a restart keeps every acknowledged write.
 */
export async function startRedis (t: TestContext, opts: { aof?: boolean, args?: string[] } = {}): Promise<RedisServer> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'herald-redis-'))
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--daemonize', 'no', '--loglevel', 'warning']
  if (opts.aof === true) args.push('--appendonly', 'yes', '--appendfsync', 'always')
  else args.push('--appendonly', 'no')
  if (opts.args !== undefined) args.push(...opts.args)
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc: undefined as unknown as ChildProcess,
    stop: async (signal = 'SIGKILL') => {
      const proc = server.proc
      if (proc.exitCode !== null || proc.signalCode !== null) return
      await new Promise<void>((resolve) => { proc.once('exit', () => resolve()); proc.kill(signal) })
    },
    restart: async () => {
      await server.stop('SIGTERM')
      await launch()
    }
  }
  async function launch (): Promise<void> {
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    server.proc = proc
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}`)
      const ping = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' })
      if (ping.stdout.trim() === 'PONG') return
      await sleep(50)
    }
    throw new Error('redis-server did not start within 10 s')
  }
  await launch()
  t.after(async () => {
    await server.stop('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  return server
}

// ---------------------------------------------------------------- Herald

export interface TestApp {
  app: FastifyInstance
  /** http://127.0.0.1:PORT (plus the prefix, if any) */
  url: string
  /** ws://127.0.0.1:PORT (plus the prefix, if any) */
  wsUrl: string
  port: number
}

/**
 * A Herald on a real loopback port, closed when the test ends. With `redisUrl` it uses the Redis bus;
 * otherwise the in-process one.
 */
export async function startHerald (t: TestContext, opts: { redisUrl?: string, config?: DeepPartial<HeraldConfig>, port?: number, options?: HeraldOptions } = {}): Promise<TestApp> {
  // The server options a host is told to give Herald (src/server-options.ts).
  const app = Fastify({ ...heraldServerOptions(defaultConfig()), logger: process.env.HERALD_TEST_LOG === '1' ? { level: 'debug' } : false, forceCloseConnections: true })
  const config: DeepPartial<HeraldConfig> = {
    jwt: { secret: SECRET, algorithms: ['HS256'] },
    redisUrl: opts.redisUrl,
    redisPrefix: 'herald-test',
    ...opts.config
  }
  await app.register(herald, { defaultMetrics: false, ...opts.options, config })
  await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  t.after(async () => { await app.close() })
  const prefix = opts.options?.prefix ?? ''
  return { app, port, url: `http://127.0.0.1:${port}${prefix}`, wsUrl: `ws://127.0.0.1:${port}${prefix}` }
}

/** Runs `fn` once with the in-process bus and once with a private Redis, as subtests. */
export function eachBus (name: string, fn: (t: TestContext, bus: { kind: 'memory' | 'redis', redisUrl?: string }) => Promise<void>): void {
  void test(`${name} [memory bus]`, async (t) => { await fn(t, { kind: 'memory' }) })
  void test(`${name} [redis bus]`, { skip: redisSkipReason() }, async (t) => {
    const redis = await startRedis(t)
    await fn(t, { kind: 'redis', redisUrl: redis.url })
  })
}

// ---------------------------------------------------------------- clients

export async function publish (base: string, channel: string, data: unknown, opts: { token?: string, id?: string, event?: string, headers?: Record<string, string> } = {}): Promise<{ status: number, body: any }> {
  const res = await fetch(`${base}/v1/channels/${encodeURIComponent(channel)}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.token ?? token()}`, ...opts.headers },
    body: JSON.stringify({ data, id: opts.id, event: opts.event })
  })
  return { status: res.status, body: await res.json() }
}

export interface Frame { type: string, [key: string]: any }

/** A `ws` client that records every frame and can wait for the ones it needs. */
export class WsClient {
  readonly frames: Frame[] = []
  private waiters: Array<() => void> = []
  closed: { code: number, reason: string } | null = null

  private constructor (readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Frame
      checkServerFrame(frame, 'WebSocket')
      this.frames.push(frame)
      this.wake()
    })
    socket.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; this.wake() })
  }

  /** Connects; rejects with the HTTP status when the upgrade is refused. */
  static async connect (wsUrl: string, opts: { token?: string | null, headers?: Record<string, string>, query?: boolean, cursor?: string } = {}): Promise<WsClient> {
    const tok = opts.token === undefined ? token() : opts.token
    const useQuery = opts.query === true
    const qs = new URLSearchParams()
    if (tok !== null && useQuery) qs.set('token', tok)
    if (opts.cursor !== undefined) qs.set('cursor', opts.cursor)
    const url = `${wsUrl}/v1/ws${qs.size > 0 ? '?' + qs.toString() : ''}`
    const headers = { ...(tok !== null && !useQuery ? { authorization: `Bearer ${tok}` } : {}), ...opts.headers }
    const socket = new WebSocket(url, { headers })
    return await new Promise((resolve, reject) => {
      socket.once('open', () => { socket.removeAllListeners('unexpected-response'); resolve(new WsClient(socket)) })
      socket.once('unexpected-response', (_req, res) => {
        let body = ''
        res.on('data', (c: Buffer) => { body += c.toString() })
        res.on('end', () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode, body: body === '' ? null : JSON.parse(body) })))
      })
      socket.once('error', reject)
    })
  }

  send (frame: object | string): void { this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame)) }

  /** Waits until `predicate` holds for some recorded frame (searching from `from`), and returns it. */
  async waitFor (predicate: (f: Frame) => boolean, timeoutMs = 5000, from = 0): Promise<Frame> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.frames.slice(from).find(predicate)
      if (found !== undefined) return found
      if (this.closed !== null) throw new Error(`socket closed (${this.closed.code} ${this.closed.reason}) before the frame arrived`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error('timed out waiting for a frame; got: ' + JSON.stringify(this.frames.slice(-5)))
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** Waits for `n` event frames of `channel` and returns them. */
  async events (channel: string, n: number, timeoutMs = 5000): Promise<Frame[]> {
    await this.waitFor(() => this.frames.filter((f) => f.type === 'event' && f.channel === channel).length >= n, timeoutMs)
    return this.frames.filter((f) => f.type === 'event' && f.channel === channel)
  }

  async subscribe (channel: string, since?: { offset: number, epoch: string }): Promise<Frame> {
    const id = 's-' + channel + '-' + this.frames.length
    const from = this.frames.length
    this.send({ type: 'subscribe', channel, since, id })
    const reply = await this.waitFor((f) => (f.type === 'subscribed' && f.channel === channel) || (f.type === 'error' && f.id === id), 5000, from)
    if (reply.type === 'error') throw Object.assign(new Error(reply.message), { frame: reply })
    return reply
  }

  async waitClosed (timeoutMs = 5000): Promise<{ code: number, reason: string }> {
    const deadline = Date.now() + timeoutMs
    while (this.closed === null) {
      if (Date.now() > deadline) throw new Error('socket did not close')
      await sleep(10)
    }
    return this.closed
  }

  close (): void { this.socket.close() }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }
}

/** One message of an SSE stream. */
export interface SseMessage { id?: string, data: Frame }

/**
 * A minimal SSE reader over fetch, so tests control `Last-Event-ID` and see every `id:` exactly
 * (the `eventsource` package is used where the behaviour of a stock client matters).
 */
export class SseClient {
  readonly messages: SseMessage[] = []
  status = 0
  ended = false
  private readonly controller = new AbortController()
  private waiters: Array<() => void> = []

  /** `token: null`: none (a connect hook admits the stream, from `headers`). */
  static async open (base: string, channels: string[], opts: { token?: string | null, lastEventId?: string, cursor?: string, headers?: Record<string, string> } = {}): Promise<SseClient> {
    const client = new SseClient()
    const qs = new URLSearchParams()
    for (const c of channels) qs.append('channel', c)
    if (opts.cursor !== undefined) qs.set('cursor', opts.cursor)
    const headers: Record<string, string> = { ...(opts.token === null ? {} : { authorization: `Bearer ${opts.token ?? token()}` }), accept: 'text/event-stream', ...opts.headers }
    if (opts.lastEventId !== undefined) headers['last-event-id'] = opts.lastEventId
    const res = await fetch(`${base}/v1/sse?${qs.toString()}`, { headers, signal: client.controller.signal })
    client.status = res.status
    if (res.status !== 200) {
      const body = await res.json()
      throw Object.assign(new Error(`sse refused: ${res.status}`), { status: res.status, body })
    }
    void client.pump(res.body!)
    return client
  }

  /** The last `id:` received: what a reconnecting EventSource sends as Last-Event-ID. */
  get lastEventId (): string | undefined {
    for (let i = this.messages.length - 1; i >= 0; i--) if (this.messages[i].id !== undefined) return this.messages[i].id
    return undefined
  }

  events (channel?: string): Frame[] {
    return this.messages.map((m) => m.data).filter((f) => f.type === 'event' && (channel === undefined || f.channel === channel))
  }

  async waitFor (predicate: (m: SseMessage) => boolean, timeoutMs = 5000): Promise<SseMessage> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.messages.find(predicate)
      if (found !== undefined) return found
      if (this.ended) throw new Error('stream ended before the message arrived')
      const left = deadline - Date.now()
      if (left <= 0) throw new Error('timed out waiting for an SSE message; got: ' + JSON.stringify(this.messages.slice(-5)))
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  async waitEvents (channel: string, n: number, timeoutMs = 5000): Promise<Frame[]> {
    await this.waitFor(() => this.events(channel).length >= n, timeoutMs)
    return this.events(channel)
  }

  close (): void { this.controller.abort() }

  private async pump (body: ReadableStream<Uint8Array>): Promise<void> {
    try {
      await readSse(body, (id, data) => {
        const frame = data as Frame
        checkServerFrame(frame, 'SSE')
        this.messages.push({ id, data: frame })
      }, () => this.wake())
    } catch (err) {
      // A stream that ends is fine; a frame its schema does not allow fails the test (as an unhandled rejection).
      if (err instanceof FrameViolation) throw err
    }
    this.ended = true
    this.wake()
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }
}

/** `token: null`: none (a connect hook admits the poll, from `headers`). */
export async function poll (base: string, channels: string[], opts: { token?: string | null, cursor?: string, timeout?: number, headers?: Record<string, string> } = {}): Promise<{ status: number, body: any }> {
  const qs = new URLSearchParams()
  for (const c of channels) qs.append('channel', c)
  if (opts.cursor !== undefined) qs.set('cursor', opts.cursor)
  if (opts.timeout !== undefined) qs.set('timeout', String(opts.timeout))
  const res = await fetch(`${base}/v1/poll?${qs.toString()}`, { headers: { ...(opts.token === null ? {} : { authorization: `Bearer ${opts.token ?? token()}` }), ...opts.headers } })
  const body = await res.json() as { events?: unknown[] }
  if (res.status === 200) for (const event of body.events ?? []) checkServerFrame(event, 'long-poll')
  return { status: res.status, body }
}

export async function sleep (ms: number): Promise<void> { await new Promise((resolve) => setTimeout(resolve, ms)) }

/** Polls `check` until it returns true or the time runs out (then fails with `what`). */
export async function until (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out: ' + what)
    await sleep(20)
  }
}

/** Long-polls from `cursor`, going round `bases` (one node per poll), until `done` holds for what was gathered. */
export async function pollLoop (bases: string[], channels: string[], cursor: string, done: (events: Frame[]) => boolean, timeoutMs = 8000): Promise<{ events: Frame[], cursor: string, polls: number }> {
  const events: Frame[] = []
  const deadline = Date.now() + timeoutMs
  let polls = 0
  while (!done(events)) {
    if (Date.now() > deadline) throw new Error('poll loop timed out; got ' + JSON.stringify(events.map((e) => [e.channel, e.offset])))
    const res = await poll(bases[polls % bases.length], channels, { cursor, timeout: 2 })
    polls++
    assert.equal(res.status, 200, JSON.stringify(res.body))
    assert.equal(res.body.recovery, undefined, 'no recovery expected: ' + JSON.stringify(res.body.recovery))
    events.push(...res.body.events)
    cursor = res.body.cursor
  }
  return { events, cursor, polls }
}


/** redis-cli against a test's private Redis; its output, trimmed. */
export function redisCli (redis: { port: number }, ...args: string[]): string {
  return spawnSync('redis-cli', ['-p', String(redis.port), ...args], { encoding: 'utf8' }).stdout.trim()
}

/** The broker answers a read again (its connection may still say `ready` a moment after Redis died). */
export async function brokerAnswers (broker: { history: Broker['history'] }): Promise<boolean> {
  try {
    await broker.history('reconnect-probe', { since: 0, limit: 0 })
    return true
  } catch {
    return false
  }
}

/** Reads an SSE body, calling `message` with each message's id (if any) and parsed data, in order, and `chunk` after each chunk. */
export async function readSse (body: ReadableStream<Uint8Array>, message: (id: string | undefined, data: unknown) => void, chunk?: () => void): Promise<void> {
  const decoder = new TextDecoder()
  let buf = ''
  for await (const bytes of body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(bytes, { stream: true })
    let at
    while ((at = buf.indexOf('\n\n')) !== -1) {
      const block = buf.slice(0, at)
      buf = buf.slice(at + 2)
      let id: string | undefined
      const data: string[] = []
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) id = line.slice(4)
        else if (line.startsWith('data: ')) data.push(line.slice(6))
      }
      if (data.length > 0) message(id, JSON.parse(data.join('\n')))
    }
    chunk?.()
  }
}

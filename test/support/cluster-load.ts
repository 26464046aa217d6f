import { rmSync } from 'node:fs'
import type { TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import { decodeCursor } from '../../src/protocol/cursor.js'
import { SECRET, sleep, startHerald, token, freePort, readSse, type Frame } from '../helper.js'
import { spawnTs, tempDir, withTimeout, type Proc } from './process.js'
import { checkServerFrame } from './frames.js'
import { randomInt } from './random.js'

/*
 * Load and bookkeeping for the fault scenarios of test/faults/: Herald nodes on a Redis Cluster (in-process, or a
 * child process that can be SIGKILLed and started again on its port), publishers that retry with the same
 * idempotency id, subscribers on every transport that resume the way the client library does, and the ledger that
 * the invariants are checked against (test/faults/invariants.ts). Nothing here sleeps to let something happen:
 * sleeps only pace loops, and every loop ends with its owner's stop() or its attempt bound.
 */

export interface Position { offset: number, epoch: string }
export const EMPTY: Position = { offset: 0, epoch: '0' }

// ---------------------------------------------------------------- nodes

export interface NodeSettings {
  /** REDIS_CLUSTER seeds, "host:port,…" */
  seeds: string
  prefix: string
  /** REDIS_WAIT_REPLICAS (default 0) */
  waitReplicas?: number
  /** POSITION_CHECK seconds (default 3: a lost subscription costs at most that much delay) */
  positionCheckSeconds?: number
}

/** A Herald node the clients can reach. */
export interface HeraldNode {
  readonly name: string
  readonly url: string
  readonly wsUrl: string
  /** False between a child process's kill and its restart. */
  up: () => boolean
}

/** Seconds a long-poll session lingers after answering (short: the shard-channel checks wait for them to end). */
export const POLL_LINGER = 2
/** No limit of Herald's may refuse the load generators (they are one IP and a few subjects). */
const LIMITS = { restMax: 10_000_000, connectRate: 100_000, connectBurst: 100_000, wsRate: 100_000, wsBurst: 100_000, maxConnectionsPerSub: 100_000 }

export async function inProcessNode (t: TestContext, name: string, s: NodeSettings): Promise<HeraldNode & { app: FastifyInstance }> {
  const { app, url, wsUrl } = await startHerald(t, {
    config: {
      redisCluster: s.seeds.split(','),
      redisPrefix: s.prefix,
      positionCheckSeconds: s.positionCheckSeconds ?? 3,
      pollLingerSeconds: POLL_LINGER,
      redisWait: { replicas: s.waitReplicas ?? 0, timeoutMs: 1000 },
      limits: LIMITS
    },
    options: { nodeId: name }
  })
  return { name, url, wsUrl, app, up: () => true }
}

/** src/server.ts as a child process on a fixed port, so that it can be SIGKILLed and started again where clients expect it. */
export class ProcessNode implements HeraldNode {
  readonly url: string
  readonly wsUrl: string
  private proc?: Proc
  private readonly cwd = tempDir()
  /** Output of every run, for failure messages. */
  private outputs: string[] = []
  starts = 0

  private constructor (readonly name: string, readonly port: number, private readonly env: Record<string, string>) {
    this.url = `http://127.0.0.1:${port}`
    this.wsUrl = `ws://127.0.0.1:${port}`
  }

  static async start (t: TestContext, name: string, s: NodeSettings): Promise<ProcessNode> {
    const port = await freePort()
    const env: Record<string, string> = {
      PORT: String(port),
      HOST: '127.0.0.1',
      JWT_SECRET: SECRET,
      REDIS_CLUSTER: s.seeds,
      REDIS_PREFIX: s.prefix,
      REDIS_WAIT_REPLICAS: String(s.waitReplicas ?? 0),
      POSITION_CHECK: String(s.positionCheckSeconds ?? 3),
      POLL_LINGER: String(POLL_LINGER),
      RATE_LIMIT_MAX: String(LIMITS.restMax),
      CONNECT_RATE: String(LIMITS.connectRate),
      CONNECT_BURST: String(LIMITS.connectBurst),
      WS_RATE: String(LIMITS.wsRate),
      WS_BURST: String(LIMITS.wsBurst),
      MAX_CONNECTIONS_PER_SUB: String(LIMITS.maxConnectionsPerSub),
      DRAIN_TIMEOUT: '1',
      LOG_LEVEL: process.env.HERALD_TEST_LOG === '1' ? 'debug' : 'warn'
    }
    const node = new ProcessNode(name, port, env)
    t.after(async () => {
      await node.kill()
      rmSync(node.cwd, { recursive: true, force: true })
    })
    await node.restart()
    return node
  }

  up (): boolean { return this.proc !== undefined && this.proc.child.exitCode === null && this.proc.child.signalCode === null }

  /** Everything the process printed, across restarts. */
  output (): string { return [...this.outputs, this.proc?.output() ?? ''].join('\n--- restart ---\n') }

  /** SIGKILL (by its PID) and wait for the exit. */
  async kill (): Promise<void> {
    if (this.proc === undefined) return
    await this.proc.kill('SIGKILL')
    this.outputs.push(this.proc.output())
    this.proc = undefined
  }

  /** Starts it (again) on its port; resolves once /healthz answers (readiness depends on the bus, which may be degraded). */
  async restart (): Promise<void> {
    if (this.up()) throw new Error(`${this.name} is still running`)
    const proc = spawnTs('src/server.ts', [], { env: this.env, cwd: this.cwd })
    this.proc = proc
    this.starts++
    const deadline = Date.now() + 30_000
    for (;;) {
      if (!this.up()) throw new Error(`${this.name} exited while starting:\n${proc.output()}`)
      if (Date.now() > deadline) throw new Error(`${this.name} did not answer /healthz within 30 s:\n${proc.output()}`)
      try {
        if ((await fetch(`${this.url}/healthz`)).status === 200) return
      } catch {}
      await sleep(50)
    }
  }
}

// ---------------------------------------------------------------- the ledger

export interface Ack { channel: string, id: string, offset: number, epoch: string, duplicate: boolean }

/**
 * Everything any client learnt about what sits at which (channel, epoch, offset): acknowledgements, delivered
 * events and history reads. Two different events at one place are a conflict (invariant 3). It also orders epochs
 * (by when one was first seen: a channel's epochs follow each other in time) and keeps, from history reads, where
 * an epoch goes on from another one (in line).
 */
export class Ledger {
  readonly acks: Ack[] = []
  readonly conflicts: string[] = []
  private readonly at = new Map<string, { id: string, source: string }>()
  private readonly ranks = new Map<string, number>()
  private readonly lines = new Map<string, Position>()
  private nextRank = 1

  note (channel: string, epoch: string, offset: number, id: string, source: string): void {
    this.rank(channel, epoch)
    const key = `${channel} ${epoch} ${offset}`
    const had = this.at.get(key)
    if (had === undefined) this.at.set(key, { id, source })
    else if (had.id !== id && this.conflicts.length < 50) this.conflicts.push(`${channel} ${epoch}:${offset} is event ${had.id} (${had.source}) and event ${id} (${source})`)
  }

  noteAck (ack: Ack): void {
    this.acks.push(ack)
    this.note(ack.channel, ack.epoch, ack.offset, ack.id, 'ack')
  }

  /** What is known to sit at a place. */
  idAt (channel: string, epoch: string, offset: number): string | undefined { return this.at.get(`${channel} ${epoch} ${offset}`)?.id }

  /** Order of a channel's epochs: the empty position's epoch first, then by first sight. */
  rank (channel: string, epoch: string): number {
    if (epoch === EMPTY.epoch) return 0
    const key = `${channel} ${epoch}`
    let r = this.ranks.get(key)
    if (r === undefined) this.ranks.set(key, r = this.nextRank++)
    return r
  }

  /** Compares two positions of a channel (epoch order, then offset). */
  compare (channel: string, a: Position, b: Position): number {
    const ra = this.rank(channel, a.epoch)
    const rb = this.rank(channel, b.epoch)
    return ra !== rb ? ra - rb : a.offset - b.offset
  }

  /** Where `epoch` goes on from (the previous epoch's last offset in line), as history showed it. */
  lineOf (channel: string, epoch: string): Position | undefined { return this.lines.get(`${channel} ${epoch}`) }

  /**
   * A read of a channel's history (oldest first): every event goes in the ledger, and consecutive events of two
   * epochs say where the later one goes on from. Returns what is wrong with the read itself (a hole, a step back).
   */
  noteHistory (channel: string, events: Frame[], source: string): string[] {
    const problems: string[] = []
    for (let i = 0; i < events.length; i++) {
      const e = events[i]
      this.note(channel, e.epoch, e.offset, dataId(e), source)
      if (i === 0) continue
      const p = events[i - 1]
      if (e.offset !== p.offset + 1) problems.push(`${channel}: history goes from ${p.epoch}:${p.offset} to ${e.epoch}:${e.offset}`)
      else if (e.epoch !== p.epoch) {
        const key = `${channel} ${e.epoch}`
        const had = this.lines.get(key)
        if (had !== undefined && (had.epoch !== p.epoch || had.offset !== p.offset)) problems.push(`${channel}: epoch ${e.epoch} goes on from ${had.epoch}:${had.offset} in one read and from ${p.epoch}:${p.offset} in another`)
        this.lines.set(key, { offset: p.offset, epoch: p.epoch })
      }
    }
    return problems
  }
}

/** The id every test event carries in its data. */
export function dataId (frame: Frame): string { return String((frame.data as { id?: unknown } | null)?.id) }

// ---------------------------------------------------------------- publishers

export interface PublishStats {
  /** Logical events started (each with its own id, however many attempts it took) */
  started: number
  acked: number
  /** Acknowledgements with duplicate: true (a retry of an attempt that had been stored) */
  duplicates: number
  /** Attempts beyond the first */
  retries: number
  /** Answers by HTTP status, or `network` (no answer: a killed node) / `timeout` (no answer within 30 s) */
  statuses: Record<string, number>
  /** Ids given up on (no acknowledgement within the bound) */
  abandoned: string[]
  /** Answers that are neither an acknowledgement nor worth a retry (a 4xx): never expected */
  refused: string[]
  /** Events sent once without an idempotency key (publishOnce), and how many of them were acknowledged */
  unkeyed: { sent: number, acked: number }
}

export interface PublisherOptions {
  ledger: Ledger
  /** The nodes publishes go to (one at random per attempt, among those up). */
  nodes: () => HeraldNode[]
  channels: string[]
  random: () => number
  /** Pause between a worker's publishes: random in [0, pauseMs) */
  pauseMs: number
  /** How long one event is retried before it is given up (default 60 s) */
  giveUpMs?: number
}

const RETRYABLE = new Set(['503', 'network', 'timeout'])

/**
 * REST publishers: each event gets an id (its idempotency key, also in its data), goes to a random node and is
 * retried with the same id — on any node — after a 503 or a lost answer, with a bounded backoff, until it is
 * acknowledged or `giveUpMs` has passed. Every acknowledgement goes in the ledger.
 */
export class Publishers {
  readonly stats: PublishStats = { started: 0, acked: 0, duplicates: 0, retries: 0, statuses: {}, abandoned: [], refused: [], unkeyed: { sent: 0, acked: 0 } }
  /** Answers per channel and status (as in stats.statuses) */
  readonly answers = new Map<string, Record<string, number>>()
  private readonly tok = token({ sub: 'publisher' })
  private workers: Array<Promise<void>> = []
  private stopping = false
  private aborted = false
  private seq = 0

  constructor (private readonly o: PublisherOptions) {}

  start (workers: number): void {
    this.stopping = false
    for (let k = 0; k < workers; k++) this.workers.push(this.work())
  }

  /** Stops starting events and waits for those under way (acknowledged or given up). */
  async stop (): Promise<void> {
    this.stopping = true
    await Promise.all(this.workers)
    this.workers = []
  }

  /** Gives up at once on everything under way (a test that failed, tearing down). */
  async abort (): Promise<void> {
    this.aborted = true
    await this.stop()
  }

  /**
   * One event on `channel` without an idempotency key, sent once (not retried: a retry could store it twice). Its
   * data still carries an id, for the ledger. Resolves with its acknowledgement, if it got one.
   */
  async publishOnce (channel: string): Promise<Ack | undefined> {
    this.stats.unkeyed.sent++
    const ack = await this.publish(channel, false)
    if (ack !== undefined) this.stats.unkeyed.acked++
    return ack
  }

  /** One event on `channel`, retried until acknowledged or given up (`keyed`: with its idempotency key, else sent once). */
  async publish (channel: string, keyed = true): Promise<Ack | undefined> {
    const id = `e${++this.seq}`
    this.stats.started++
    const deadline = Date.now() + (this.o.giveUpMs ?? 60_000)
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) this.stats.retries++
      const live = this.o.nodes().filter((n) => n.up())
      const node = live[randomInt(this.o.random, live.length)]
      let status = 'network'
      let body: any
      if (node !== undefined) {
        try {
          const res = await fetch(`${node.url}/v1/channels/${encodeURIComponent(channel)}/events`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${this.tok}` },
            body: JSON.stringify(keyed ? { data: { id }, id } : { data: { id } }),
            signal: AbortSignal.timeout(30_000)
          })
          status = String(res.status)
          body = await res.json()
        } catch (err) {
          status = (err as Error).name === 'TimeoutError' ? 'timeout' : 'network'
        }
      }
      this.stats.statuses[status] = (this.stats.statuses[status] ?? 0) + 1
      const mine = this.answers.get(channel) ?? {}
      mine[status] = (mine[status] ?? 0) + 1
      this.answers.set(channel, mine)
      if (status === '201') {
        const ack: Ack = { channel, id, offset: body.offset, epoch: body.epoch, duplicate: body.duplicate === true }
        this.stats.acked++
        if (ack.duplicate) this.stats.duplicates++
        this.o.ledger.noteAck(ack)
        return ack
      }
      if (!keyed) return undefined
      if (!RETRYABLE.has(status)) {
        this.stats.refused.push(`${id} on ${channel} via ${node?.name ?? '-'}: ${status} ${JSON.stringify(body)}`)
        return undefined
      }
      if (this.aborted) return undefined
      if (Date.now() > deadline) {
        this.stats.abandoned.push(id)
        return undefined
      }
      await sleep(Math.min(50 * 2 ** attempt, 1000))
    }
  }

  private async work (): Promise<void> {
    const { channels, random, pauseMs } = this.o
    while (!this.stopping) {
      await this.publish(channels[randomInt(random, channels.length)])
      await sleep(randomInt(random, pauseMs))
    }
  }
}

// ---------------------------------------------------------------- subscribers

export type TransportName = 'websocket' | 'sse' | 'long-poll'

/** Milliseconds since this module was loaded: when a client saw something (for failure reports). */
const T0 = Date.now()
export function clock (): number { return Date.now() - T0 }

/** What one subscriber saw of one channel, in order (`at`: clock() when it arrived). */
export type Item = { at?: number } & (
  | { t: 'event', offset: number, epoch: string, id: string }
  | { t: 'subscribed', offset: number, epoch: string, recovered?: boolean, reason?: string, node: string }
  | { t: 'unsubscribed', reason?: string, resubscribe?: boolean }
  /** A long-poll answer's `recovery` entry: recovered false, continuing from offset/epoch */
  | { t: 'recovery', offset: number, epoch: string, reason: string })

export interface SubscriberStats {
  events: number
  /** `subscribed` frames or long-poll `recovery` entries with recovered: false */
  recoveredFalse: number
  /** `unsubscribed` frames with resubscribe: true */
  resubscribes: number
  /** Connections opened again after one was lost (or polls retried after a failed one) */
  reconnects: number
  /** Subscribe attempts answered with an error frame (then retried) */
  subscribeErrors: number
}

/**
 * A client of one transport subscribed to `channels`, on its home node while that is up (else on another). It
 * records every frame per channel and keeps the last position of each, from which it resumes when its connection
 * is lost or the server tells it to resubscribe — what the client library does.
 */
export abstract class Subscriber {
  readonly timelines = new Map<string, Item[]>()
  readonly positions = new Map<string, Position>()
  readonly stats: SubscriberStats = { events: 0, recoveredFalse: 0, resubscribes: 0, reconnects: 0, subscribeErrors: 0 }
  /** Frames that break the protocol's schema or rules, seen while running */
  readonly problems: string[] = []
  /** The node it is connected to now (undefined: none) */
  node?: HeraldNode
  protected stopped = false
  protected readonly tok: string

  constructor (readonly name: string, readonly transport: TransportName, readonly channels: string[], public home: HeraldNode, protected readonly nodes: () => HeraldNode[], protected readonly ledger: Ledger) {
    for (const c of channels) this.timelines.set(c, [])
    this.tok = token({ sub: name })
  }

  abstract start (): Promise<void>
  abstract stop (): Promise<void>
  /** Runs again after a stop, from the positions it has. */
  protected abstract restart (): Promise<void>

  /** Goes offline (its connection closed), keeping its positions. */
  async pause (): Promise<void> { await this.stop() }

  /** Comes back from where it stood (on `home`, when given, while that is up): a resume, as after a lost connection. */
  async resume (home?: HeraldNode): Promise<void> {
    if (home !== undefined) this.home = home
    this.stopped = false
    await this.restart()
  }

  /** Has a position in every channel (each subscribed at least once). */
  get subscribedAll (): boolean { return this.channels.every((c) => this.positions.has(c)) }

  /** Home first while it is up, then the other nodes that are up. */
  protected candidates (): HeraldNode[] {
    const up = this.nodes().filter((n) => n.up())
    return [...up.filter((n) => n === this.home), ...up.filter((n) => n !== this.home)]
  }

  protected problem (text: string): void { if (this.problems.length < 50) this.problems.push(`${this.name}: ${text}`) }

  protected checked (frame: unknown): frame is Frame {
    try {
      checkServerFrame(frame, this.name)
      return true
    } catch (err) {
      this.problem((err as Error).message)
      return false
    }
  }

  protected onEvent (f: Frame): void {
    const items = this.timelines.get(f.channel)
    if (items === undefined) { this.problem(`event of a channel it never asked for: ${f.channel}`); return }
    const id = dataId(f)
    items.push({ t: 'event', offset: f.offset, epoch: f.epoch, id, at: clock() })
    this.ledger.note(f.channel, f.epoch, f.offset, id, `${this.name} received`)
    this.positions.set(f.channel, { offset: f.offset, epoch: f.epoch })
    this.stats.events++
  }

  protected onSubscribed (f: Frame): void {
    const items = this.timelines.get(f.channel)
    if (items === undefined) { this.problem(`subscribed to a channel it never asked for: ${f.channel}`); return }
    const item: Item = { t: 'subscribed', offset: f.offset, epoch: f.epoch, node: this.node?.name ?? '?', at: clock() }
    if (f.recovered !== undefined) item.recovered = f.recovered
    if (f.reason !== undefined) item.reason = f.reason
    items.push(item)
    this.ledger.rank(f.channel, f.epoch)
    // recovered: true continues from where it stood (the frame names the current epoch, the replay may be of the one before).
    if (f.recovered === false) this.stats.recoveredFalse++
    if (f.recovered !== true) this.positions.set(f.channel, { offset: f.offset, epoch: f.epoch })
  }

  protected onUnsubscribed (f: Frame): void {
    this.timelines.get(f.channel)?.push({ t: 'unsubscribed', reason: f.reason, resubscribe: f.resubscribe, at: clock() })
    if (f.resubscribe === true) this.stats.resubscribes++
  }

  /** A backoff pause, for loops that wait for a node to come back. */
  protected async backoff (attempt: number): Promise<void> { await sleep(Math.min(100 * 2 ** attempt, 1000)) }
}

/** At most this many consecutive failed connection attempts (about 10 minutes at the backoff's cap). */
const MAX_ATTEMPTS = 600

/** A WebSocket client: subscribes every channel, resubscribes on `unsubscribed` with resubscribe: true, reconnects anywhere. */
export class WsSubscriber extends Subscriber {
  private socket?: WebSocket
  private readonly state = new Map<string, 'none' | 'pending' | 'active'>()
  private readonly pendingIds = new Map<string, string>()
  private seq = 0
  private running?: Promise<void>

  constructor (name: string, channels: string[], home: HeraldNode, nodes: () => HeraldNode[], ledger: Ledger) {
    super(name, 'websocket', channels, home, nodes, ledger)
  }

  async start (): Promise<void> { this.running = this.connectLoop() }
  protected async restart (): Promise<void> { await this.start() }

  /** Stops reconnecting, closes the socket and waits for its end (no frame of it arrives after this). */
  async stop (): Promise<void> {
    this.stopped = true
    await this.running
    const socket = this.socket
    if (socket === undefined) return
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    socket.close()
    await withTimeout(closed, 5000, `${this.name}: the socket to close`).catch(() => { socket.terminate() })
  }

  private async connectLoop (): Promise<void> {
    for (let attempt = 0; !this.stopped && attempt < MAX_ATTEMPTS; attempt++) {
      for (const node of this.candidates()) {
        if (this.stopped) return
        try {
          await this.open(node)
          return
        } catch {}
      }
      await this.backoff(attempt)
    }
    if (!this.stopped) this.problem(`gave up reconnecting after ${MAX_ATTEMPTS} rounds`)
  }

  private async open (node: HeraldNode): Promise<void> {
    const socket = new WebSocket(`${node.wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${this.tok}` } })
    await withTimeout(new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('error', reject)
      socket.once('unexpected-response', (_req, res) => { res.resume(); reject(new Error(`upgrade refused: ${res.statusCode ?? '?'}`)) })
    }), 5000, `WebSocket to ${node.name}`).catch((err: unknown) => { socket.terminate(); throw err })
    socket.removeAllListeners('error')
    socket.on('error', () => {})
    this.socket = socket
    this.node = node
    for (const c of this.channels) this.state.set(c, 'none')
    socket.on('message', (raw) => { if (this.socket === socket) this.onFrame(raw.toString()) })
    socket.once('close', () => {
      if (this.socket !== socket) return
      this.socket = undefined
      this.node = undefined
      if (this.stopped) return
      this.stats.reconnects++
      this.running = this.connectLoop()
    })
    for (const c of this.channels) this.subscribe(c)
  }

  private subscribe (channel: string): void {
    if (this.stopped || this.socket === undefined || this.state.get(channel) !== 'none') return
    const id = `s${++this.seq}`
    this.pendingIds.set(id, channel)
    this.state.set(channel, 'pending')
    this.socket.send(JSON.stringify({ type: 'subscribe', channel, since: this.positions.get(channel), id }))
  }

  private onFrame (text: string): void {
    const f = JSON.parse(text) as unknown
    if (!this.checked(f)) return
    switch (f.type) {
      case 'subscribed':
        if (this.state.get(f.channel) !== 'pending') this.problem(`subscribed to ${f.channel as string} while ${this.state.get(f.channel) ?? 'unknown'}`)
        this.state.set(f.channel, 'active')
        this.onSubscribed(f)
        break
      case 'event':
        if (this.state.get(f.channel) !== 'active') this.problem(`event ${f.epoch as string}:${f.offset as number} of ${f.channel as string} while ${this.state.get(f.channel) ?? 'unknown'}`)
        this.onEvent(f)
        break
      case 'unsubscribed':
        this.state.set(f.channel, 'none')
        this.onUnsubscribed(f)
        if (f.resubscribe === true) this.subscribe(f.channel)
        break
      case 'ack':
        this.pendingIds.delete(f.id)
        break
      case 'error': {
        const channel = f.id === undefined ? undefined : this.pendingIds.get(f.id)
        if (channel === undefined) { this.problem(`error frame ${text}`); break }
        this.pendingIds.delete(f.id)
        this.stats.subscribeErrors++
        this.state.set(channel, 'none')
        // A subscribe refused while the bus is away (503-like): again shortly, on this connection.
        setTimeout(() => this.subscribe(channel), 300).unref()
        break
      }
    }
  }
}

/** An SSE stream of every channel; when it ends it is opened again (home first) with the last id as Last-Event-ID. */
export class SseSubscriber extends Subscriber {
  private lastId?: string
  private controller?: AbortController
  private running?: Promise<void>
  streams = 0

  constructor (name: string, channels: string[], home: HeraldNode, nodes: () => HeraldNode[], ledger: Ledger) {
    super(name, 'sse', channels, home, nodes, ledger)
  }

  async start (): Promise<void> { this.running = this.loop() }
  protected async restart (): Promise<void> { await this.start() }

  async stop (): Promise<void> {
    this.stopped = true
    this.controller?.abort()
    await this.running
  }

  private async loop (): Promise<void> {
    let failures = 0
    while (!this.stopped && failures < MAX_ATTEMPTS) {
      const list = this.candidates()
      const node = list[failures % Math.max(1, list.length)]
      const opened = node !== undefined && await this.stream(node)
      if (this.stopped) return
      this.stats.reconnects++
      if (opened) failures = 0
      else await this.backoff(failures++)
    }
    if (!this.stopped) this.problem(`gave up reconnecting after ${MAX_ATTEMPTS} attempts`)
  }

  /** One stream, until it ends; true if it opened. */
  private async stream (node: HeraldNode): Promise<boolean> {
    const controller = new AbortController()
    this.controller = controller
    const qs = new URLSearchParams()
    for (const c of this.channels) qs.append('channel', c)
    const headers: Record<string, string> = { authorization: `Bearer ${this.tok}`, accept: 'text/event-stream' }
    if (this.lastId !== undefined) headers['last-event-id'] = this.lastId
    const headTimer = setTimeout(() => controller.abort(), 10_000)
    try {
      const res = await fetch(`${node.url}/v1/sse?${qs.toString()}`, { headers, signal: controller.signal })
      clearTimeout(headTimer)
      if (res.status !== 200) { await res.body?.cancel(); return false }
      this.node = node
      this.streams++
      await readSse(res.body!, (id, data) => {
        if (!this.checked(data)) return
        const f = data
        if (f.type === 'subscribed') this.onSubscribed(f)
        else if (f.type === 'event') this.onEvent(f)
        else if (f.type === 'unsubscribed') this.onUnsubscribed(f)
        else if (f.type === 'error') this.stats.subscribeErrors++
        if (id !== undefined) this.lastId = id
      })
      return true
    } catch {
      return this.node === node
    } finally {
      clearTimeout(headTimer)
      this.node = undefined
    }
  }
}

/** A cursor position that differs from what the events delivered say (checked against the epochs' lineage at the end). */
export interface CursorNote { channel: string, cursor: Position, seen: Position }

/** Long-polls every channel with the cursor of the last answer, from its home node while that is up. */
export class PollSubscriber extends Subscriber {
  cursor?: string
  polls = 0
  /** Every answered poll: node, cursor sent and received, events and recovery entries (for failure reports) */
  readonly trace: Array<{ node: string, sent: number, at: number, cursorIn?: string, cursorOut: string, events: string[], recovery: string[] }> = []
  /** Cursor positions that differ from the events' (once per distinct pair) */
  readonly cursorNotes = new Map<string, CursorNote>()
  private controller?: AbortController
  private running?: Promise<void>

  constructor (name: string, channels: string[], home: HeraldNode, nodes: () => HeraldNode[], ledger: Ledger) {
    super(name, 'long-poll', channels, home, nodes, ledger)
  }

  /** The first poll (no cursor, no wait) gives the starting positions; then it polls until stopped. */
  async start (): Promise<void> {
    for (let attempt = 0; this.cursor === undefined; attempt++) {
      if (this.stopped || attempt >= MAX_ATTEMPTS) throw new Error(`${this.name}: no first answer`)
      const list = this.candidates()
      if (list.length === 0 || !(await this.pollOnce(list[attempt % list.length], 0))) await this.backoff(attempt)
    }
    this.running = this.loop()
  }

  protected async restart (): Promise<void> { this.running = this.loop() }

  async stop (): Promise<void> {
    this.stopped = true
    this.controller?.abort()
    await this.running
  }

  private async loop (): Promise<void> {
    let failures = 0
    while (!this.stopped && failures < MAX_ATTEMPTS) {
      const list = this.candidates()
      const node = list[failures % Math.max(1, list.length)]
      if (node !== undefined && await this.pollOnce(node, 3)) { failures = 0; continue }
      if (this.stopped) return
      this.stats.reconnects++
      await this.backoff(failures++)
    }
    if (!this.stopped) this.problem(`gave up polling after ${MAX_ATTEMPTS} failed polls`)
  }

  private async pollOnce (node: HeraldNode, timeout: number): Promise<boolean> {
    const controller = new AbortController()
    this.controller = controller
    const qs = new URLSearchParams()
    for (const c of this.channels) qs.append('channel', c)
    if (this.cursor !== undefined) qs.set('cursor', this.cursor)
    qs.set('timeout', String(timeout))
    const timer = setTimeout(() => controller.abort(), (timeout + 20) * 1000)
    const sent = clock()
    try {
      const res = await fetch(`${node.url}/v1/poll?${qs.toString()}`, { headers: { authorization: `Bearer ${this.tok}` }, signal: controller.signal })
      const body = await res.json() as { events?: unknown[], cursor?: string, recovery?: Array<{ channel: string, offset: number, epoch: string, reason: string }> }
      if (res.status !== 200 || typeof body.cursor !== 'string') return false
      this.polls++
      this.node = node
      this.trace.push({
        node: node.name,
        sent,
        at: clock(),
        cursorIn: this.cursor,
        cursorOut: body.cursor,
        events: (body.events ?? []).map((e) => { const f = e as Frame; return `${f.channel as string} ${f.epoch as string}:${f.offset as number}` }),
        recovery: (body.recovery ?? []).map((r) => `${r.channel} ${r.epoch}:${r.offset} ${r.reason}`)
      })
      this.answer(node, body.cursor, body.events ?? [], body.recovery ?? [])
      return true
    } catch {
      return false
    } finally {
      clearTimeout(timer)
    }
  }

  private answer (node: HeraldNode, cursor: string, events: unknown[], recovery: Array<{ channel: string, offset: number, epoch: string, reason: string }>): void {
    const positions = decodeCursor(cursor, this.channels)
    if (this.cursor === undefined) {
      // The first answer: where each channel starts.
      if (events.length > 0) this.problem(`the first answer carried ${events.length} events`)
      for (const c of this.channels) {
        const p = positions.get(c)
        if (p === undefined) { this.problem(`the first cursor has no position for ${c}`); continue }
        this.timelines.get(c)!.push({ t: 'subscribed', offset: p.offset, epoch: p.epoch, node: node.name, at: clock() })
        this.positions.set(c, { offset: p.offset, epoch: p.epoch })
      }
      this.cursor = cursor
      return
    }
    for (const r of recovery) {
      const items = this.timelines.get(r.channel)
      if (items === undefined) { this.problem(`recovery for a channel it never asked for: ${r.channel}`); continue }
      items.push({ t: 'recovery', offset: r.offset, epoch: r.epoch, reason: r.reason, at: clock() })
      this.ledger.rank(r.channel, r.epoch)
      this.positions.set(r.channel, { offset: r.offset, epoch: r.epoch })
      this.stats.recoveredFalse++
    }
    for (const e of events) if (this.checked(e)) this.onEvent(e)
    this.cursor = cursor
    for (const c of this.channels) {
      const p = positions.get(c)
      const seen = this.positions.get(c)!
      if (p === undefined) this.problem(`a cursor without ${c}`)
      else if (p.offset !== seen.offset || p.epoch !== seen.epoch) {
        this.cursorNotes.set(`${c} ${p.epoch}:${p.offset} ${seen.epoch}:${seen.offset}`, { channel: c, cursor: { offset: p.offset, epoch: p.epoch }, seen: { ...seen } })
      }
    }
  }
}

/** Answers of one channel so far, all statuses together. */
export function answerCount (p: Publishers, channel: string): number {
  return Object.values(p.answers.get(channel) ?? {}).reduce((a, b) => a + b, 0)
}

/** What a subscriber saw of one channel, for a failure report: its timeline, and (long-poll) the polls that concern it. */
export function describeChannel (sub: Subscriber, channel: string): string {
  const lines = [`${sub.name} ${channel} timeline: ${JSON.stringify(sub.timelines.get(channel)?.slice(0, 40))}`]
  if (sub instanceof PollSubscriber) {
    for (const [i, p] of sub.trace.entries()) {
      const pos = (cursor: string | undefined): string => {
        if (cursor === undefined) return '-'
        const at = decodeCursor(cursor, sub.channels).get(channel)
        return at === undefined ? 'none' : `${at.epoch}:${at.offset}`
      }
      const events = p.events.filter((e) => e.startsWith(channel + ' '))
      const recovery = p.recovery.filter((e) => e.startsWith(channel + ' '))
      if (pos(p.cursorIn) === pos(p.cursorOut) && events.length === 0 && recovery.length === 0) continue
      lines.push(`  poll ${i} on ${p.node} (${p.sent}-${p.at} ms): ${pos(p.cursorIn)} -> ${pos(p.cursorOut)} events [${events.join(', ')}] recovery [${recovery.join(', ')}]`)
      if (lines.length > 40) break
    }
  }
  return lines.join('\n')
}

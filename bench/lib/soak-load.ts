import http from 'node:http'
import type { Socket } from 'node:net'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { Rng } from './soak-rng.js'

/**
 * The soak benchmark's load: bounded loops of WebSocket, SSE and long-poll clients that come and go, a steady
 * REST publisher, and slow readers that stop reading so Herald has to evict them. Every loop checks `stopping`
 * and every wait is cut short by `stop()`; every client has a hard time cap. Traffic goes only to `base`
 * (a loopback URL checked by the caller).
 */

export interface LoadConfig {
  /** http://127.0.0.1:<port> */
  base: string
  secret: string
  seed: number
  /** Channels `soak:c000` … */
  channels: number
  /** The first `hot` channels get `hotShare` of the publishes (slow readers subscribe to them). */
  hot: number
  hotShare: number
  /** Publishes per second (REST). */
  rate: number
  /** Approximate size of each event's `data`, bytes. */
  payloadBytes: number
  /** Concurrent client slots. */
  ws: number
  wsSlow: number
  sse: number
  sseSlow: number
  poll: number
  tokenTtlMs: number
}

type TransportKey = 'websocket' | 'sse' | 'long-poll'

export interface SoakCounters {
  wsOpened: number
  wsClosed: number
  wsConnectFailed: number
  sseOpened: number
  sseClosed: number
  sseConnectFailed: number
  polls: number
  pollsOk: number
  pollsFailed: number
  pollsAborted: number
  /** Evictions the clients saw: WebSocket close 4001 or an SSE `disconnect` message with code 4001. */
  evictionsSeen: number
  wsEvictionsSeen: number
  sseEvictionsSeen: number
  /** Slow readers: how many paused, and how their connection ended once they read again. */
  slowPaused: number
  slowEvicted: number
  slowCut: number
  slowSurvived: number
  /** Slow readers still paused (or draining) when the load stopped. */
  slowUnfinished: number
  events: Record<TransportKey, number>
  publishOk: number
  publishDuplicate: number
  publishFailed: number
  /** Publishes not sent: this process stalled over a second (the rate is not made up), or 256 were in flight. */
  publishSkipped: number
  publishSkippedInFlight: number
  /** Subscriptions made with a position (WebSocket `since`, SSE Last-Event-ID) and how they were answered. */
  resumes: number
  resumeRecovered: number
  resumeNotRecovered: number
  /** A resume answered `recovered: true` whose position was not the one asked for. */
  resumeMismatch: number
  /** Events missing in the offset sequence of a subscription (after a recovered resume or live), and duplicates. */
  gapEvents: number
  gaps: number
  dups: number
  /** Everything that went wrong, by kind (error frame codes, HTTP statuses, socket errors). */
  errors: Record<string, number>
  closeCodes: Record<string, number>
  notRecoveredReasons: Record<string, number>
}

export function newCounters (): SoakCounters {
  return {
    wsOpened: 0, wsClosed: 0, wsConnectFailed: 0, sseOpened: 0, sseClosed: 0, sseConnectFailed: 0,
    polls: 0, pollsOk: 0, pollsFailed: 0, pollsAborted: 0,
    evictionsSeen: 0, wsEvictionsSeen: 0, sseEvictionsSeen: 0,
    slowPaused: 0, slowEvicted: 0, slowCut: 0, slowSurvived: 0, slowUnfinished: 0,
    events: { websocket: 0, sse: 0, 'long-poll': 0 },
    publishOk: 0, publishDuplicate: 0, publishFailed: 0, publishSkipped: 0, publishSkippedInFlight: 0,
    resumes: 0, resumeRecovered: 0, resumeNotRecovered: 0, resumeMismatch: 0,
    gapEvents: 0, gaps: 0, dups: 0,
    errors: {}, closeCodes: {}, notRecoveredReasons: {}
  }
}

export function errorTotal (c: SoakCounters): number {
  return Object.values(c.errors).reduce((a, b) => a + b, 0)
}

/** Figures of one sampling interval. */
export interface LoadWindow { publishes: number, pubP50Ms?: number, pubP99Ms?: number, pubMaxMs?: number, clientLagP99Ms: number }

interface Position { offset: number, epoch: string }
interface Track { next: number, epoch: string }

interface ServerFrame {
  type?: string
  channel?: string
  offset?: number
  epoch?: string
  recovered?: boolean
  reason?: string
  resubscribe?: boolean
  code?: string | number
  id?: string
}

const MAX_INFLIGHT_PUBLISHES = 256
const PUBLISH_TICK_MS = 20
const REQUEST_TIMEOUT_MS = 10_000
/** A paused (slow) reader reads again after this long at most, then waits this long for its end. */
const SLOW_PAUSE_MS: [number, number] = [15_000, 40_000]
const SLOW_DRAIN_MS = 10_000
const RESUME_POOL = 400

function inc (map: Record<string, number>, key: string, by = 1): void { map[key] = (map[key] ?? 0) + by }

function short (s: string): string { return s.replace(/\s+/g, ' ').slice(0, 80) }

export class SoakLoad {
  readonly counters = newCounters()
  private stopping = false
  private readonly waiters = new Set<() => void>()
  /** Ends an open client at once (at stop). */
  private readonly live = new Set<() => void>()
  private readonly slots: Array<Promise<void>> = []
  private readonly rng: Rng
  private readonly allChannels: string[]
  private readonly hotChannels: string[]
  private readonly url: URL
  private readonly tokens: Record<'ws' | 'sse' | 'poll' | 'pub', string[]>
  /** Newest position per channel, from publish answers (slow readers resume from behind it). */
  private readonly latest = new Map<string, Position>()
  /** Positions left by WebSocket clients that went away; later clients resume from them. */
  private readonly resumePool: Array<{ channel: string, pos: Position }> = []
  private readonly pubAgent: http.Agent
  private readonly sseAgent: http.Agent
  private readonly pollAgent: http.Agent
  private pubTimer?: NodeJS.Timeout
  private pubInFlight = 0
  private pubSeq = 0
  private readonly recentIds: Array<{ id: string, channel: string, body: string, pos: Position }> = []
  private readonly padding: string
  /** Publish round trips (ms) since the last `window()`. */
  private latencies: number[] = []
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 20 })

  constructor (private readonly cfg: LoadConfig) {
    this.rng = new Rng(cfg.seed)
    this.url = new URL(cfg.base)
    this.allChannels = Array.from({ length: cfg.channels }, (_, i) => 'soak:c' + String(i).padStart(3, '0'))
    this.hotChannels = this.allChannels.slice(0, cfg.hot)
    const sign = createSigner({ key: cfg.secret, expiresIn: cfg.tokenTtlMs }) as (claims: Record<string, unknown>) => string
    const mint = (kind: string, n: number, publish: boolean): string[] =>
      Array.from({ length: n }, (_, i) => sign({ sub: `soak-${kind}-${i}`, subscribe: ['soak:*'], ...(publish ? { publish: ['soak:*'] } : {}) }))
    this.tokens = { ws: mint('ws', 20, false), sse: mint('sse', 10, false), poll: mint('poll', 10, false), pub: mint('pub', 4, true) }
    this.pubAgent = new http.Agent({ keepAlive: true, maxSockets: 16 })
    this.sseAgent = new http.Agent({ keepAlive: false })
    this.pollAgent = new http.Agent({ keepAlive: true, maxSockets: Math.max(4, cfg.poll * 2) })
    this.padding = 'x'.repeat(Math.max(0, cfg.payloadBytes - 60))
  }

  get plan (): string {
    const c = this.cfg
    return `${c.ws} WebSocket + ${c.wsSlow} slow WebSocket, ${c.sse} SSE + ${c.sseSlow} slow SSE, ${c.poll} long-poll client slots; ` +
      `${c.rate} publishes/s of ~${c.payloadBytes} B over ${c.channels} channels (${Math.round(c.hotShare * 100)}% to the ${c.hot} hot ones)`
  }

  start (): void {
    this.loopDelay.enable()
    const c = this.cfg
    for (let i = 0; i < c.ws; i++) this.spawnSlot((rng) => this.wsSession(rng, false))
    for (let i = 0; i < c.wsSlow; i++) this.spawnSlot((rng) => this.wsSession(rng, true), 5000)
    for (let i = 0; i < c.sse; i++) { const st = newSseState(); this.spawnSlot((rng) => this.sseSession(rng, st, false)) }
    for (let i = 0; i < c.sseSlow; i++) { const st = newSseState(); this.spawnSlot((rng) => this.sseSession(rng, st, true), 5000) }
    for (let i = 0; i < c.poll; i++) { const st = newPollState(); this.spawnSlot((rng) => this.pollOnce(rng, st)) }
    this.startPublisher()
  }

  /** Stops publishing, ends every client, waits (bounded) for every loop to return. */
  async stop (timeoutMs = 15_000): Promise<void> {
    this.stopping = true
    clearInterval(this.pubTimer)
    for (const w of [...this.waiters]) w()
    for (const kill of [...this.live]) kill()
    const deadline = Date.now() + timeoutMs
    while (this.pubInFlight > 0 && Date.now() < deadline) await plainSleep(50)
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.allSettled(this.slots), new Promise<void>((resolve) => { timer = setTimeout(resolve, Math.max(0, deadline - Date.now())) })])
    clearTimeout(timer)
    for (const kill of [...this.live]) kill()
    this.loopDelay.disable()
    this.pubAgent.destroy()
    this.sseAgent.destroy()
    this.pollAgent.destroy()
  }

  snapshot (): SoakCounters { return structuredClone(this.counters) }

  /** Publish round-trip percentiles and this process's event-loop delay since the previous call. */
  window (): LoadWindow {
    const l = this.latencies.sort((a, b) => a - b)
    this.latencies = []
    const q = (p: number): number | undefined => l.length === 0 ? undefined : l[Math.min(l.length - 1, Math.floor(p * l.length))]
    const w: LoadWindow = { publishes: l.length, pubP50Ms: q(0.5), pubP99Ms: q(0.99), pubMaxMs: l.length === 0 ? undefined : l[l.length - 1], clientLagP99Ms: this.loopDelay.percentile(99) / 1e6 }
    this.loopDelay.reset()
    return w
  }

  // ------------------------------------------------------------------ plumbing

  private err (kind: string): void { inc(this.counters.errors, kind) }

  /** Waits `ms`, or less when the load stops. */
  private async wait (ms: number): Promise<void> {
    if (this.stopping) return
    await new Promise<void>((resolve) => {
      const done = (): void => { clearTimeout(timer); this.waiters.delete(done); resolve() }
      const timer = setTimeout(done, ms)
      this.waiters.add(done)
    })
  }

  private spawnSlot (run: (rng: Rng) => Promise<void>, startSpreadMs = 3000): void {
    const rng = this.rng.fork()
    const loop = async (): Promise<void> => {
      await this.wait(rng.int(0, startSpreadMs))
      while (!this.stopping) {
        try {
          await run(rng)
        } catch (err) {
          this.err('client: ' + short((err as Error).message))
        }
        await this.wait(rng.int(50, 1500))
      }
    }
    this.slots.push(loop())
  }

  private auth (rng: Rng, kind: 'ws' | 'sse' | 'poll' | 'pub'): string { return rng.pick(this.tokens[kind]) }

  private channelsFor (rng: Rng, min: number, max: number, hot: boolean): string[] {
    return rng.sample(hot ? this.hotChannels : this.allChannels, rng.int(min, max))
  }

  /**
   * A slow reader's channels: every hot one and some others — 150–250 KiB/s at the default rate. Loopback TCP
   * buffers take 4–6 MiB of a reader that stopped (measured on Linux), so less would outlast the pause unnoticed.
   * SSE needs fewer: each of its events carries the cursor of all the stream's channels in its `id:`.
   */
  private slowChannels (rng: Rng, fewest: number, most: number): string[] {
    const others = rng.sample(this.allChannels.slice(this.cfg.hot), rng.int(fewest, most))
    return [...this.hotChannels, ...others].slice(0, 120)
  }

  private onSubscribed (subs: Map<string, Track>, f: ServerFrame, asked: Position | undefined): void {
    if (f.channel === undefined || f.offset === undefined || f.epoch === undefined) { this.err('bad subscribed frame'); return }
    if (asked !== undefined) {
      this.counters.resumes++
      if (f.recovered === true) {
        this.counters.resumeRecovered++
        if (f.offset !== asked.offset || (f.epoch !== asked.epoch && asked.offset !== 0)) this.counters.resumeMismatch++
      } else {
        this.counters.resumeNotRecovered++
        inc(this.counters.notRecoveredReasons, f.reason ?? String(f.recovered))
      }
    }
    subs.set(f.channel, { next: f.offset + 1, epoch: f.epoch })
  }

  /** Checks one event against its subscription's offset sequence; returns false when it was not expected at all. */
  private onEvent (subs: Map<string, Track>, f: ServerFrame): void {
    if (f.channel === undefined || f.offset === undefined || f.epoch === undefined) { this.err('bad event frame'); return }
    const t = subs.get(f.channel)
    if (t === undefined) { this.err('event for a channel not subscribed'); return }
    if (t.epoch !== f.epoch) {
      // A subscription that started before the channel's first event may see the stream's epoch only with it
      // (a channel without a stream can be answered with a placeholder epoch); any other change is an error.
      if (t.next !== 1) { this.err('epoch changed mid-subscription'); t.epoch = f.epoch; t.next = f.offset + 1; return }
      t.epoch = f.epoch
    }
    if (f.offset === t.next) { t.next++; return }
    if (f.offset < t.next) { this.counters.dups++; return }
    this.counters.gaps++
    this.counters.gapEvents += f.offset - t.next
    t.next = f.offset + 1
  }

  private remember (subs: Map<string, Track>): void {
    for (const [channel, t] of subs) {
      if (t.next <= 1) continue
      this.resumePool.push({ channel, pos: { offset: t.next - 1, epoch: t.epoch } })
      if (this.resumePool.length > RESUME_POOL) this.resumePool.shift()
    }
  }

  /** A position `back` events behind the newest one of `channel`, if a publish answer told us the newest. */
  private behind (channel: string, back: number): Position | undefined {
    const top = this.latest.get(channel)
    if (top === undefined) return undefined
    return { offset: Math.max(0, top.offset - back), epoch: top.epoch }
  }

  private stayMs (rng: Rng): number {
    const r = rng.next()
    if (r < 0.6) return rng.int(1_000, 15_000)
    if (r < 0.9) return rng.int(15_000, 60_000)
    return rng.int(60_000, 150_000)
  }

  // ------------------------------------------------------------------ WebSocket

  private async wsSession (rng: Rng, slow: boolean): Promise<void> {
    if (this.stopping) return
    const c = this.counters
    const token = this.auth(rng, 'ws')
    const viaQuery = rng.chance(0.5)
    const wsUrl = `ws://${this.url.host}/v1/ws` + (viaQuery ? '?token=' + token : '')
    const channels = slow ? this.slowChannels(rng, 30, 80) : this.channelsFor(rng, 1, 5, false)
    const stayMs = slow ? rng.int(...SLOW_PAUSE_MS) : this.stayMs(rng)
    const abrupt = rng.chance(0.2)
    const resumeSome = !slow && rng.chance(0.3)
    const slowReplay = slow && rng.chance(0.5)
    const churnSubs = !slow && rng.chance(0.2)

    await new Promise<void>((resolve) => {
      const ws = new WebSocket(wsUrl, { headers: viaQuery ? {} : { authorization: 'Bearer ' + token }, perMessageDeflate: false, handshakeTimeout: REQUEST_TIMEOUT_MS })
      const subs = new Map<string, Track>()
      const asked = new Map<string, Position>()
      const leaving = new Set<string>()
      const timers: NodeJS.Timeout[] = []
      let opened = false
      let finished = false
      let weClosed = false
      let paused = false
      let pauseTimer: NodeJS.Timeout | undefined
      let frameId = 0
      const raw = (): Socket | null => (ws as unknown as { _socket: Socket | null })._socket
      const send = (frame: Record<string, unknown>): void => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame)) }
      const subscribe = (channel: string, since: Position | undefined): void => {
        if (since !== undefined) asked.set(channel, since); else asked.delete(channel)
        send({ type: 'subscribe', channel, id: String(++frameId), ...(since !== undefined ? { since } : {}) })
      }
      const end = (how: 'close' | 'terminate'): void => {
        weClosed = true
        if (how === 'terminate' || ws.readyState === WebSocket.CONNECTING) ws.terminate()
        else {
          ws.close(1000, 'bye')
          timers.push(setTimeout(() => ws.terminate(), 3000))
        }
      }
      let stoppedByRun = false
      const kill = (): void => { stoppedByRun = true; end('close'); if (paused) raw()?.resume() }
      const finish = (): void => {
        if (finished) return
        finished = true
        for (const t of timers) clearTimeout(t)
        clearInterval(pauseTimer)
        this.live.delete(kill)
        if (!slow) this.remember(subs)
        resolve()
      }
      this.live.add(kill)
      // The hard cap: nothing lives longer than its plan plus a margin.
      timers.push(setTimeout(() => { this.err('websocket client overran its time cap'); ws.terminate(); timers.push(setTimeout(finish, 2000)) }, stayMs + SLOW_DRAIN_MS + 30_000))

      const startPause = (): void => {
        if (paused || finished || ws.readyState !== WebSocket.OPEN) return
        paused = true
        c.slowPaused++
        // ws itself resumes the socket when its parser drains; keep it paused until the planned time is up.
        const hold = (): void => { const s = raw(); if (s !== null && !s.isPaused()) s.pause() }
        hold()
        pauseTimer = setInterval(hold, 50)
        timers.push(setTimeout(() => {
          clearInterval(pauseTimer)
          raw()?.resume()
          // Read whatever the server left, then see how the connection ended.
          timers.push(setTimeout(() => { if (!finished) end('close') }, SLOW_DRAIN_MS))
        }, stayMs))
      }

      ws.on('open', () => { opened = true; c.wsOpened++ })
      ws.on('error', (err: Error) => {
        if (stoppedByRun) return
        const m = /Unexpected server response: (\d+)/.exec(err.message)
        this.err(m !== null ? `ws upgrade ${m[1]}` : `ws ${opened ? 'socket' : 'connect'}: ${short(err.message)}`)
      })
      ws.on('close', (code: number) => {
        if (opened) { c.wsClosed++; inc(c.closeCodes, 'ws ' + code) } else if (!stoppedByRun) c.wsConnectFailed++
        if (code === 4001) { c.evictionsSeen++; c.wsEvictionsSeen++ }
        if (slow && paused) {
          if (code === 4001) c.slowEvicted++
          else if (stoppedByRun) c.slowUnfinished++
          else if (weClosed) c.slowSurvived++
          else c.slowCut++
        }
        finish()
      })
      ws.on('message', (data: WebSocket.RawData) => {
        let f: ServerFrame
        try { f = JSON.parse(data.toString()) as ServerFrame } catch { this.err('ws frame not JSON'); return }
        switch (f.type) {
          case 'connected':
            for (const ch of channels) {
              let since: Position | undefined
              if (slowReplay) { if (this.hotChannels.includes(ch)) since = this.behind(ch, rng.int(50, 180)) }
              else if (resumeSome && rng.chance(0.7)) {
                const i = this.resumePool.findIndex((p) => p.channel === ch)
                if (i >= 0) since = this.resumePool.splice(i, 1)[0].pos
                else if (rng.chance(0.5)) since = this.behind(ch, rng.int(1, 40))
              }
              subscribe(ch, since)
            }
            if (slow) {
              // Stop reading once subscribed (the replay, if any, is then still on its way).
              timers.push(setTimeout(startPause, rng.int(200, 2000)))
            } else {
              timers.push(setTimeout(() => end(abrupt ? 'terminate' : 'close'), stayMs))
              const ping = setInterval(() => send({ type: 'ping', id: 'p' + (++frameId) }), rng.int(5_000, 20_000))
              timers.push(ping as unknown as NodeJS.Timeout)
              const clearPing = (): void => clearInterval(ping)
              ws.once('close', clearPing)
              if (churnSubs && stayMs > 5000) {
                timers.push(setTimeout(() => {
                  const drop = rng.pick(channels)
                  if (!subs.has(drop)) return
                  // Events already on their way may still come until the `unsubscribed` answer; none after it.
                  leaving.add(drop)
                  send({ type: 'unsubscribe', channel: drop, id: String(++frameId) })
                  const add = rng.pick(this.allChannels)
                  if (!subs.has(add) && !channels.includes(add)) subscribe(add, undefined)
                }, rng.int(1000, stayMs - 1000)))
              }
            }
            break
          case 'subscribed':
            this.onSubscribed(subs, f, f.channel !== undefined ? asked.get(f.channel) : undefined)
            if (f.channel !== undefined) asked.delete(f.channel)
            break
          case 'event':
            c.events.websocket++
            if (f.channel !== undefined && leaving.has(f.channel)) break
            this.onEvent(subs, f)
            break
          case 'unsubscribed':
            if (f.channel !== undefined && f.reason === 'client') { leaving.delete(f.channel); subs.delete(f.channel) }
            if (f.reason !== 'client') inc(c.errors, 'ws unsubscribed: ' + String(f.reason))
            if (f.resubscribe === true && f.channel !== undefined) {
              const t = subs.get(f.channel)
              subscribe(f.channel, t !== undefined ? { offset: t.next - 1, epoch: t.epoch } : undefined)
            }
            break
          case 'error':
            this.err('ws error frame ' + String(f.code))
            break
          default:
            break
        }
      })
    })
  }

  // ------------------------------------------------------------------ SSE

  private async sseSession (rng: Rng, st: SseState, slow: boolean): Promise<void> {
    if (this.stopping) return
    const c = this.counters
    if (st.lastId === undefined || st.channels.length === 0 || rng.chance(0.1)) {
      st.channels = slow ? this.slowChannels(rng, 5, 20) : this.channelsFor(rng, 1, 3, false)
      st.lastId = undefined
      st.seen.clear()
    }
    const resumed = st.lastId !== undefined
    const stayMs = slow ? rng.int(...SLOW_PAUSE_MS) : rng.int(3_000, 30_000)
    const token = this.auth(rng, 'sse')
    const viaQuery = rng.chance(0.3)
    const qs = st.channels.map((ch) => 'channel=' + encodeURIComponent(ch)).join('&') + (viaQuery ? '&token=' + token : '')
    const headers: Record<string, string> = { accept: 'text/event-stream' }
    if (!viaQuery) headers.authorization = 'Bearer ' + token
    if (st.lastId !== undefined) headers['last-event-id'] = st.lastId
    const asked = new Map<string, Position>(resumed ? st.seen : [])
    const subs = new Map<string, Track>()

    await new Promise<void>((resolve) => {
      const timers: NodeJS.Timeout[] = []
      let finished = false
      let opened = false
      let paused = false
      let sawEviction = false
      let weClosed = false
      const finish = (): void => {
        if (finished) return
        finished = true
        for (const t of timers) clearTimeout(t)
        this.live.delete(kill)
        if (opened) c.sseClosed++
        if (slow && paused) {
          if (sawEviction) c.slowEvicted++
          else if (stoppedByRun) c.slowUnfinished++
          else if (weClosed) c.slowSurvived++
          else c.slowCut++
        }
        resolve()
      }
      const req = http.request({ host: this.url.hostname, port: this.url.port, path: '/v1/sse?' + qs, method: 'GET', headers, agent: this.sseAgent })
      let stoppedByRun = false
      const close = (): void => { weClosed = true; req.destroy() }
      const kill = (): void => { stoppedByRun = true; close() }
      this.live.add(kill)
      timers.push(setTimeout(() => { this.err('sse client overran its time cap'); close(); timers.push(setTimeout(finish, 2000)) }, stayMs + SLOW_DRAIN_MS + 30_000))
      req.on('error', (err: Error) => {
        if (!weClosed) {
          if (!opened) { c.sseConnectFailed++; this.err('sse connect: ' + short(err.message)) } else if (!(slow && paused)) this.err('sse stream: ' + short(err.message))
        }
        finish()
      })
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          c.sseConnectFailed++
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => { if (body.length < 500) body += d })
          res.on('end', () => { this.err(`sse ${String(res.statusCode)} ${errorCode(body)}`); finish() })
          res.on('error', () => finish())
          return
        }
        opened = true
        c.sseOpened++
        res.setEncoding('utf8')
        let buf = ''
        let subscribedAll = false
        const onMessage = (id: string | undefined, data: string): void => {
          let f: ServerFrame
          try { f = JSON.parse(data) as ServerFrame } catch { this.err('sse data not JSON'); return }
          if (f.type === 'subscribed') {
            this.onSubscribed(subs, f, f.channel !== undefined ? asked.get(f.channel) : undefined)
            if (f.channel !== undefined && f.offset !== undefined && f.epoch !== undefined) st.seen.set(f.channel, { offset: f.offset, epoch: f.epoch })
            if (!subscribedAll && subs.size >= st.channels.length) {
              subscribedAll = true
              if (slow) timers.push(setTimeout(pause, rng.int(200, 2000)))
            }
          } else if (f.type === 'event') {
            c.events.sse++
            this.onEvent(subs, f)
            if (f.channel !== undefined && f.offset !== undefined && f.epoch !== undefined) st.seen.set(f.channel, { offset: f.offset, epoch: f.epoch })
          } else if (f.type === 'disconnect') {
            if (String(f.code) === '4001') { sawEviction = true; c.evictionsSeen++; c.sseEvictionsSeen++ }
            inc(c.closeCodes, 'sse ' + String(f.code))
          } else if (f.type === 'error') {
            this.err('sse error frame ' + String(f.code))
          } else if (f.type === 'unsubscribed') {
            inc(c.errors, 'sse unsubscribed: ' + String(f.reason))
          }
          if (id !== undefined) st.lastId = id
        }
        res.on('data', (chunk: string) => {
          buf += chunk
          let pos = 0
          let end: number
          while ((end = buf.indexOf('\n\n', pos)) >= 0) {
            const msg = buf.slice(pos, end)
            pos = end + 2
            let id: string | undefined
            let data: string | undefined
            for (const line of msg.split('\n')) {
              if (line.startsWith('id: ')) id = line.slice(4)
              else if (line.startsWith('data: ')) data = line.slice(6)
            }
            if (data !== undefined) onMessage(id, data)
          }
          buf = buf.slice(pos)
        })
        res.on('end', () => finish())
        res.on('aborted', () => { if (!weClosed && !(slow && paused)) this.err('sse stream aborted by the server') })
        res.on('error', () => {})
        res.on('close', () => finish())
        const pause = (): void => {
          if (finished || paused) return
          paused = true
          c.slowPaused++
          res.pause()
          timers.push(setTimeout(() => {
            res.resume()
            timers.push(setTimeout(() => { if (!finished) close() }, SLOW_DRAIN_MS))
          }, stayMs))
        }
        if (!slow) timers.push(setTimeout(close, stayMs))
        else timers.push(setTimeout(pause, 3000))
      })
      req.end()
    })
  }

  // ------------------------------------------------------------------ long-poll

  private async pollOnce (rng: Rng, st: PollState): Promise<void> {
    if (this.stopping) return
    const c = this.counters
    if (st.channels.length === 0 || rng.chance(0.05)) {
      st.channels = this.channelsFor(rng, 1, 3, false)
      st.cursor = undefined
      st.tracks.clear()
    }
    const timeout = rng.int(1, 8)
    const abortAfter = rng.chance(0.05) ? rng.int(200, 1500) : undefined
    const token = this.auth(rng, 'poll')
    const qs = st.channels.map((ch) => 'channel=' + encodeURIComponent(ch)).join('&') + `&timeout=${timeout}` + (st.cursor !== undefined ? '&cursor=' + encodeURIComponent(st.cursor) : '')
    c.polls++
    const result = await new Promise<{ status: number, body: string } | 'aborted' | Error>((resolve) => {
      let done = false
      const settle = (v: { status: number, body: string } | 'aborted' | Error): void => {
        if (done) return
        done = true
        clearTimeout(cap)
        clearTimeout(abortTimer)
        this.live.delete(kill)
        resolve(v)
      }
      const req = http.request({ host: this.url.hostname, port: this.url.port, path: '/v1/poll?' + qs, method: 'GET', headers: { authorization: 'Bearer ' + token }, agent: this.pollAgent })
      const kill = (): void => { req.destroy(); settle('aborted') }
      this.live.add(kill)
      const cap = setTimeout(() => { req.destroy(); settle(new Error('poll timed out')) }, (timeout + 10) * 1000)
      const abortTimer = abortAfter !== undefined ? setTimeout(kill, abortAfter) : undefined
      req.on('error', (err: Error) => settle(err))
      req.on('response', (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => { body += d })
        res.on('end', () => settle({ status: res.statusCode ?? 0, body }))
        res.on('error', (err: Error) => settle(err))
      })
      req.end()
    })
    if (result === 'aborted') { c.pollsAborted++; return }
    if (result instanceof Error) { c.pollsFailed++; this.err('poll: ' + short(result.message)); return }
    if (result.status !== 200) { c.pollsFailed++; this.err(`poll ${result.status} ${errorCode(result.body)}`); await this.wait(500); return }
    c.pollsOk++
    let answer: { events?: ServerFrame[], cursor?: string, recovery?: Array<{ channel: string, recovered: boolean, reason?: string, offset: number, epoch: string }> }
    try { answer = JSON.parse(result.body) as typeof answer } catch { this.err('poll answer not JSON'); return }
    for (const r of answer.recovery ?? []) {
      c.resumes++
      c.resumeNotRecovered++
      inc(c.notRecoveredReasons, r.reason ?? 'unknown')
      st.tracks.set(r.channel, { next: r.offset + 1, epoch: r.epoch })
    }
    for (const e of answer.events ?? []) {
      c.events['long-poll']++
      if (e.channel === undefined || e.offset === undefined || e.epoch === undefined) { this.err('bad poll event'); continue }
      // The first event of a channel (no cursor yet) starts its sequence.
      if (!st.tracks.has(e.channel)) st.tracks.set(e.channel, { next: e.offset, epoch: e.epoch })
      this.onEvent(st.tracks, e)
    }
    if (answer.cursor !== undefined) st.cursor = answer.cursor
    await this.wait(rng.int(0, 300))
  }

  // ------------------------------------------------------------------ publisher

  private startPublisher (): void {
    const rng = this.rng.fork()
    let carry = 0
    let last = Date.now()
    this.pubTimer = setInterval(() => {
      const now = Date.now()
      carry += (now - last) * this.cfg.rate / 1000
      last = now
      let n = Math.floor(carry)
      carry -= n
      // The rate holds through short stalls of this process's event loop; a stall of over a second is not made up.
      const most = Math.ceil(this.cfg.rate)
      if (n > most) { this.counters.publishSkipped += n - most; n = most }
      for (let i = 0; i < n; i++) {
        if (this.pubInFlight >= MAX_INFLIGHT_PUBLISHES) { this.counters.publishSkippedInFlight++; continue }
        this.publishOne(rng)
      }
    }, PUBLISH_TICK_MS)
  }

  private publishOne (rng: Rng): void {
    const c = this.counters
    const channel = rng.chance(this.cfg.hotShare) ? rng.pick(this.hotChannels) : rng.pick(this.allChannels)
    const seq = ++this.pubSeq
    let id: string | undefined
    let target = channel
    let body: string
    let firstOffset: Position | undefined
    const retry = this.recentIds.length > 0 && rng.chance(0.02)
    if (retry) {
      // The same publish again (same id, channel and body), as a client retrying after a lost answer would:
      // it must be answered duplicate: true with the first offset.
      const first = rng.pick(this.recentIds)
      id = first.id
      target = first.channel
      body = first.body
      firstOffset = first.pos
    } else {
      if (rng.chance(0.2)) id = `soak-${this.cfg.seed}-${seq}`
      body = JSON.stringify({ data: { n: seq, t: Date.now(), p: this.padding }, event: 'soak', ...(id !== undefined ? { id } : {}) })
    }
    this.pubInFlight++
    let settled = false
    const sentAt = performance.now()
    const settle = (ok: boolean, kind?: string): void => {
      if (settled) return
      settled = true
      this.pubInFlight--
      if (this.latencies.length < 100_000) this.latencies.push(performance.now() - sentAt)
      if (ok) c.publishOk++
      else { c.publishFailed++; this.err(kind ?? 'publish failed') }
    }
    const req = http.request({
      host: this.url.hostname,
      port: this.url.port,
      method: 'POST',
      path: '/v1/channels/' + encodeURIComponent(target) + '/events',
      agent: this.pubAgent,
      timeout: REQUEST_TIMEOUT_MS,
      headers: { authorization: 'Bearer ' + this.auth(rng, 'pub'), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
    })
    req.on('timeout', () => { req.destroy(new Error('publish timed out')) })
    req.on('error', (err: Error) => settle(false, 'publish: ' + short(err.message)))
    req.on('response', (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('error', (err: Error) => settle(false, 'publish: ' + short(err.message)))
      res.on('end', () => {
        if (res.statusCode !== 201) { settle(false, `publish ${String(res.statusCode)} ${errorCode(text)}`); return }
        try {
          const a = JSON.parse(text) as { channel: string, offset: number, epoch: string, duplicate: boolean }
          if (a.duplicate) {
            c.publishDuplicate++
            if (firstOffset !== undefined && (a.offset !== firstOffset.offset || a.epoch !== firstOffset.epoch)) this.err('duplicate publish answered with another offset')
          } else if (retry) this.err('retried publish id not recognised as duplicate')
          if (!retry && id !== undefined) {
            // Retried later only once acknowledged (a retry racing its first publish is another test).
            this.recentIds.push({ id, channel: target, body, pos: { offset: a.offset, epoch: a.epoch } })
            if (this.recentIds.length > 100) this.recentIds.shift()
          }
          const top = this.latest.get(a.channel)
          if (top === undefined || top.epoch !== a.epoch || top.offset < a.offset) this.latest.set(a.channel, { offset: a.offset, epoch: a.epoch })
          settle(true)
        } catch {
          settle(false, 'publish answer not JSON')
        }
      })
    })
    req.end(body)
  }
}

interface SseState { channels: string[], lastId?: string, seen: Map<string, Position> }
function newSseState (): SseState { return { channels: [], seen: new Map() } }

interface PollState { channels: string[], cursor?: string, tracks: Map<string, Track> }
function newPollState (): PollState { return { channels: [], tracks: new Map() } }

function errorCode (body: string): string {
  try {
    const j = JSON.parse(body) as { code?: string, error?: { code?: string } }
    return j.code ?? j.error?.code ?? ''
  } catch {
    return short(body.slice(0, 60))
  }
}

async function plainSleep (ms: number): Promise<void> { await new Promise((resolve) => setTimeout(resolve, ms)) }

import http from 'node:http'
import https from 'node:https'
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { payload, nowMs } from './frame.js'
import type { PeerProtocol } from './options.js'

export interface PublisherOptions {
  protocol: PeerProtocol
  targets: string[]
  via: 'rest' | 'ws'
  rooms: number
  channelPrefix: string
  payload: number
  /** Sockets: REST keep-alive sockets per target, or WebSocket publishing connections. */
  publishers: number
  secret?: string
  tokens?: string[]
}

export interface PublishCounts { sent: number, acked: number, failed: number, inFlight: number, errors: Record<string, number> }

const TICK_MS = 2
const REQUEST_TIMEOUT_MS = 10_000

/**
 * Publishes at a steady rate, round robin over the rooms: event k goes to room k mod rooms with the next
 * sequence number of that room. The payload embeds the send time (`t`), the room (`c`) and the sequence (`s`).
 * Every publish is acknowledged (REST 201 or a WebSocket ack); failed ones are remembered per room so that
 * receivers do not count them as lost.
 */
export class Publisher {
  readonly seq: number[]
  readonly failed = new Map<number, number[]>()
  readonly counts: PublishCounts = { sent: 0, acked: 0, failed: 0, inFlight: 0, errors: {} }
  private k = 0
  private timer?: NodeJS.Timeout
  private readonly agents: http.Agent[] = []
  private readonly sockets: WebSocket[] = []
  private readonly waiting = new Map<string, { room: number, seq: number, timer: NodeJS.Timeout }>()
  private readonly tokens: string[] = []
  private nextAck = 1
  private rr = 0
  private settledWaiters: Array<() => void> = []

  constructor (private readonly o: PublisherOptions) {
    this.seq = new Array<number>(o.rooms).fill(0)
    if (o.protocol === 'herald') {
      if (o.tokens !== undefined) this.tokens = o.tokens.slice(0, Math.max(1, o.publishers))
      else {
        const sign = createSigner({ key: o.secret!, expiresIn: 12 * 3600_000 }) as (c: Record<string, unknown>) => string
        for (let i = 0; i < Math.max(1, Math.min(o.publishers, 64)); i++) this.tokens.push(sign({ sub: 'loadtest-publisher-' + i, publish: ['*'], subscribe: ['*'] }))
      }
    }
    if (o.via === 'rest') {
      for (const target of o.targets) {
        const Agent = target.startsWith('https:') ? https.Agent : http.Agent
        this.agents.push(new Agent({ keepAlive: true, maxSockets: o.publishers }))
      }
    }
  }

  /** Opens the WebSocket publishing connections (no-op for REST). */
  async prepare (timeoutMs = 20_000): Promise<void> {
    if (this.o.via !== 'ws') return
    await Promise.all(Array.from({ length: this.o.publishers }, async (_, i) => { this.sockets.push(await this.openSocket(i, timeoutMs)) }))
  }

  private async openSocket (i: number, timeoutMs: number): Promise<WebSocket> {
    const target = this.o.targets[i % this.o.targets.length].replace(/^http/, 'ws')
    const url = this.o.protocol === 'herald' ? target + '/v1/ws?token=' + this.tokens[i % this.tokens.length]
      : this.o.protocol === 'bare' ? target + '/v1/ws' : target + '/socket.io/?EIO=4&transport=websocket'
    const ws = new WebSocket(url, { perMessageDeflate: false })
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { ws.terminate(); reject(new Error('publisher connection timed out')) }, timeoutMs)
      const ok = (): void => { clearTimeout(timer); resolve(ws) }
      ws.on('error', (err) => { clearTimeout(timer); reject(err) })
      ws.on('close', () => { for (const [id, w] of this.waiting) if (id.startsWith(i + ':')) this.settle(id, w.room, w.seq, 'publisher socket closed') })
      ws.on('message', (data: Buffer) => {
        const text = data.toString()
        if (this.o.protocol === 'socketio') {
          if (text === '2') { ws.send('3'); return }
          if (text.startsWith('0')) { ws.send('40'); return }
          if (text.startsWith('40')) { ok(); return }
          if (text.startsWith('43')) {
            const id = i + ':' + String(parseInt(text.slice(2), 10))
            const w = this.waiting.get(id)
            if (w !== undefined) this.settle(id, w.room, w.seq)
          }
          return
        }
        let frame: { type?: string, id?: string, code?: string }
        try { frame = JSON.parse(text) as typeof frame } catch { return }
        if (frame.type === 'ack' || frame.type === 'error') {
          const id = i + ':' + String(frame.id)
          const w = this.waiting.get(id)
          if (w !== undefined) this.settle(id, w.room, w.seq, frame.type === 'error' ? 'ws ' + String(frame.code) : undefined)
        }
      })
      if (this.o.protocol !== 'socketio') ws.on('open', ok)
    })
  }

  /** Publishes `rate` events per second until `until` (Date.now() ms), then resolves once every publish is settled. */
  async run (rate: number, until: number): Promise<void> {
    if (rate <= 0) { await sleep(Math.max(0, until - Date.now())); return }
    const start = Date.now()
    let sent = 0
    // Open loop: the schedule does not wait for answers (a slow server shows as latency, not as a lower rate),
    // up to a generous bound on publishes in flight.
    const maxInFlight = Math.max(256, this.o.publishers * 64)
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = Date.now()
        if (now >= until) { resolve(); return }
        const due = Math.floor((now - start) / 1000 * rate) + 1
        while (sent < due && this.counts.inFlight < maxInFlight) { this.publishOne(); sent++ }
        this.timer = setTimeout(tick, TICK_MS)
      }
      tick()
    })
    await this.settled(REQUEST_TIMEOUT_MS + 1000)
  }

  stop (): void { clearTimeout(this.timer) }

  private publishOne (): void {
    const room = this.k % this.o.rooms
    this.k++
    const seq = ++this.seq[room]
    const data = payload(nowMs(), room, seq, this.o.payload)
    const channel = this.o.channelPrefix + room
    this.counts.sent++
    this.counts.inFlight++
    if (this.o.via === 'rest') this.publishRest(room, seq, channel, data)
    else this.publishWs(room, seq, channel, data)
  }

  private publishRest (room: number, seq: number, channel: string, data: string): void {
    const t = this.rr++ % this.o.targets.length
    const url = new URL(this.o.targets[t] + '/v1/channels/' + encodeURIComponent(channel) + '/events')
    const body = '{"data":' + data + '}'
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
    if (this.tokens.length > 0) headers.authorization = 'Bearer ' + this.tokens[seq % this.tokens.length]
    const mod = url.protocol === 'https:' ? https : http
    let done = false
    const finish = (error?: string): void => { if (!done) { done = true; this.settle(undefined, room, seq, error) } }
    const req = mod.request(url, { method: 'POST', agent: this.agents[t], headers, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      res.resume()
      res.on('end', () => finish(res.statusCode === 201 || res.statusCode === 200 ? undefined : 'http ' + String(res.statusCode)))
      res.on('error', () => finish('response error'))
    })
    req.on('timeout', () => { req.destroy(); finish('timeout') })
    req.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message))
    req.end(body)
  }

  private publishWs (room: number, seq: number, channel: string, data: string): void {
    const i = this.rr++ % this.sockets.length
    const ws = this.sockets[i]
    const ackId = this.nextAck++
    const id = i + ':' + ackId
    const timer = setTimeout(() => this.settle(id, room, seq, 'timeout'), REQUEST_TIMEOUT_MS)
    this.waiting.set(id, { room, seq, timer })
    if (ws.readyState !== WebSocket.OPEN) { this.settle(id, room, seq, 'publisher socket closed'); return }
    if (this.o.protocol === 'socketio') ws.send('42' + ackId + '["publish","' + channel + '",' + data + ']')
    else ws.send('{"type":"publish","channel":"' + channel + '","data":' + data + ',"id":"' + ackId + '"}')
  }

  private settle (id: string | undefined, room: number, seq: number, error?: string): void {
    if (id !== undefined) {
      const w = this.waiting.get(id)
      if (w === undefined) return
      clearTimeout(w.timer)
      this.waiting.delete(id)
    }
    this.counts.inFlight--
    if (error === undefined) this.counts.acked++
    else {
      this.counts.failed++
      this.counts.errors[error] = (this.counts.errors[error] ?? 0) + 1
      let list = this.failed.get(room)
      if (list === undefined) { list = []; this.failed.set(room, list) }
      list.push(seq)
    }
    if (this.counts.inFlight === 0) {
      const waiters = this.settledWaiters
      this.settledWaiters = []
      for (const w of waiters) w()
    }
  }

  private async settled (timeoutMs: number): Promise<void> {
    if (this.counts.inFlight === 0) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs)
      this.settledWaiters.push(() => { clearTimeout(timer); resolve() })
    })
  }

  /** Acknowledged publishes per room (for the expected deliveries). */
  ackedPerRoom (): number[] {
    return this.seq.map((top, room) => top - (this.failed.get(room)?.length ?? 0))
  }

  close (): void {
    this.stop()
    for (const w of this.waiting.values()) clearTimeout(w.timer)
    for (const ws of this.sockets) ws.terminate()
    for (const a of this.agents) a.destroy()
  }
}

export async function sleep (ms: number): Promise<void> { await new Promise((resolve) => setTimeout(resolve, ms)) }

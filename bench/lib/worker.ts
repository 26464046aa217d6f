import http from 'node:http'
import https from 'node:https'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { createSigner } from 'fast-jwt'
import { scan, scanEvent, isJsonEvent, isSocketIoEvent, nextEvent, cursorOf, SseSplitter, nowMs } from './frame.js'
import { newHistogram, encode, type Histogram } from './hist.js'
import { RawWs } from './rawws.js'
import { transportOf, roomsOf, type WorkerConfig, type FromWorker, type ToWorker, type StageReport } from './plan.js'
import type { Transport } from './options.js'

/**
 * The connection-holding half of the load generator. One instance per worker process (or one in the
 * coordinator's process with --workers 0). It opens its share of the connections at the planned pace,
 * subscribes them, and for every event frame records the latency from the send time the publisher embedded
 * in `data`, and the (room, seq) pair for loss and duplicate accounting — without parsing the frame.
 */

/** One subscription of one connection. Sequence numbers received are kept in a bitset. */
class Sub {
  subscribed = false
  /** Herald offset of the last event (ordering check); -1 before the first. */
  lastOffset = -1
  offsetGaps = 0
  offsetDups = 0
  uniq = 0
  dups = 0
  bits = new Uint8Array(64)
  constructor (readonly room: number) {}

  record (seq: number): void {
    const byte = seq >> 3
    if (byte >= this.bits.length) {
      let size = this.bits.length * 2
      while (size <= byte) size *= 2
      const grown = new Uint8Array(size)
      grown.set(this.bits)
      this.bits = grown
    }
    const mask = 1 << (seq & 7)
    if ((this.bits[byte] & mask) !== 0) { this.dups++; return }
    this.bits[byte] |= mask
    this.uniq++
  }

  has (seq: number): boolean {
    const byte = seq >> 3
    return byte < this.bits.length && (this.bits[byte] & (1 << (seq & 7))) !== 0
  }
}

type ConnState = 'waiting' | 'connecting' | 'subscribing' | 'ready' | 'failed' | 'closed'

class Conn {
  state: ConnState = 'waiting'
  readonly subs: Sub[]
  startedAt = 0
  openedAt = 0
  ws?: RawWs
  req?: http.ClientRequest
  agent?: http.Agent
  cursor?: string
  timer?: NodeJS.Timeout
  pendingSubs: number
  /** Binding retries (a local port that turned out to be taken). */
  retries = 0
  constructor (readonly i: number, readonly transport: Transport, rooms: number[], readonly target: string, readonly local: string | undefined, public localPort: number | undefined, readonly token: string | undefined) {
    this.subs = rooms.map((r) => new Sub(r))
    this.pendingSubs = rooms.length
  }

  sub (room: number): Sub | undefined {
    const subs = this.subs
    for (let k = 0; k < subs.length; k++) if (subs[k].room === room) return subs[k]
    return undefined
  }
}

export class Generator {
  private cfg!: WorkerConfig
  private conns: Conn[] = []
  private next = 0
  private pending = 0
  private opened = 0
  private connected = 0
  private ready = 0
  private failed = 0
  private dropped = 0
  private delivered = 0
  private uniq = 0
  private windowCount = 0
  private inWindow = 0
  private measured = 0
  private negative = 0
  private unknown = 0
  private measureFrom = Number.POSITIVE_INFINITY
  private measureEnd = Number.POSITIVE_INFINITY
  private hist: Histogram = newHistogram()
  private interval: Histogram = newHistogram()
  private readonly connectHist = newHistogram()
  private readonly readyHist = newHistogram()
  private readonly errors: Record<string, number> = {}
  private pacer?: NodeJS.Timeout
  private progressTimer?: NodeJS.Timeout
  private readySent = false
  private connectStart = 0
  private lastReadyAt = 0
  private closing = false
  private readonly lag: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 })
  private readonly cpuStart = process.cpuUsage()
  private sign?: (claims: Record<string, unknown>) => string
  private readonly tokenCache = new Map<number, string>()

  constructor (private readonly send: (msg: FromWorker) => void) {}

  handle (msg: ToWorker): void {
    switch (msg.type) {
      case 'init': this.init(msg.config); break
      case 'stage': this.stage(msg.measureFrom, msg.measureEnd); break
      case 'stageEnd': this.send(this.stageReport(msg.maxSeq, new Map(msg.failed))); break
      case 'count': this.send({ type: 'count', index: this.cfg.index, uniq: this.uniq }); break
      case 'close': this.close(); break
    }
  }

  // ---------------------------------------------------------------- connecting

  private init (cfg: WorkerConfig): void {
    this.cfg = cfg
    if (cfg.secret !== undefined) this.sign = createSigner({ key: cfg.secret, expiresIn: 12 * 3600_000 }) as (claims: Record<string, unknown>) => string
    for (let i = cfg.from; i < cfg.to; i++) {
      const transport = transportOf(i, cfg.mix)
      const addrs = cfg.sourceAddrs.length
      const local = addrs > 0 ? cfg.sourceAddrs[i % addrs] : undefined
      const lp = cfg.localPorts
      const port = lp !== null && addrs > 0 ? lp.base + (lp.offset + Math.floor(i / addrs)) % lp.count : undefined
      this.conns.push(new Conn(i, transport, roomsOf(i, cfg.subsPerConn, cfg.rooms), cfg.targets[i % cfg.targets.length], local, port, this.tokenFor(i)))
    }
    this.lag.enable()
    this.connectStart = Date.now()
    this.progressTimer = setInterval(() => this.send(this.progress()), cfg.progressMs)
    this.progressTimer.unref?.()
    const delay = Math.max(0, cfg.startAt - Date.now())
    this.pacer = setTimeout(() => this.pace(), delay)
    if (this.conns.length === 0) this.maybeReady()
  }

  private tokenFor (i: number): string | undefined {
    if (this.cfg.protocol !== 'herald') return undefined
    if (this.cfg.tokens !== undefined) return this.cfg.tokens[i % this.cfg.tokens.length]
    // 50 connections per subject: under Herald's default MAX_CONNECTIONS_PER_SUB (100).
    const group = Math.floor(i / 50)
    let token = this.tokenCache.get(group)
    if (token === undefined) {
      token = this.sign!({ sub: 'loadtest-' + group, subscribe: ['*'], publish: ['*'] })
      this.tokenCache.set(group, token)
    }
    return token
  }

  /** Opens every connection whose planned time has come, within the in-flight bound; re-arms itself. */
  private pace (): void {
    this.pacer = undefined
    if (this.closing) return
    const { startAt, ramp, totalConnections, maxPending } = this.cfg
    const now = Date.now()
    const due = ramp <= 0 ? Number.POSITIVE_INFINITY : Math.floor((now - startAt) / (ramp * 1000) * totalConnections)
    let budget = 2000 // per tick, so a storm does not block the event loop for seconds
    while (this.next < this.conns.length && this.pending < maxPending && budget-- > 0) {
      const conn = this.conns[this.next]
      if (conn.i > due) break
      this.next++
      this.open(conn)
    }
    if (this.next < this.conns.length) this.pacer = setTimeout(() => this.pace(), this.pending >= maxPending ? 5 : (ramp <= 0 ? 0 : 5))
  }

  private open (conn: Conn): void {
    conn.state = 'connecting'
    conn.startedAt = nowMs()
    this.pending++
    this.opened++
    conn.timer = setTimeout(() => this.fail(conn, 'timeout'), this.cfg.connectTimeout * 1000)
    try {
      if (conn.transport === 'ws') this.openWs(conn)
      else if (conn.transport === 'sse') this.openSse(conn)
      else this.openPoll(conn)
    } catch (err) {
      this.fail(conn, (err as NodeJS.ErrnoException).code ?? (err as Error).message)
    }
  }

  private channel (room: number): string { return this.cfg.channelPrefix + room }

  private wsUrl (conn: Conn): string {
    const base = conn.target.replace(/^http/, 'ws')
    switch (this.cfg.protocol) {
      case 'herald': return base + '/v1/ws?token=' + conn.token!
      case 'bare': return base + '/v1/ws'
      case 'socketio': return base + '/socket.io/?EIO=4&transport=websocket'
    }
  }

  private openWs (conn: Conn): void {
    const url = new URL(this.wsUrl(conn))
    const protocol = this.cfg.protocol
    const herald = protocol === 'herald'
    const ws: RawWs = new RawWs({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || (url.protocol === 'wss:' ? 443 : 80)),
      path: url.pathname + url.search,
      localAddress: conn.local,
      localPort: conn.localPort
    }, {
      onOpen: () => {
        if (conn.ws !== ws) return
        this.onConnected(conn)
        if (protocol === 'socketio') return // wait for the engine.io open packet
        for (let k = 0; k < conn.subs.length; k++) {
          ws.send('{"type":"subscribe","channel":"' + this.channel(conn.subs[k].room) + '","id":"' + k + '"}')
        }
      },
      onMessage: protocol === 'socketio'
        ? (buf, start, end) => { if (isSocketIoEvent(buf, start)) this.onEvent(conn, buf, start, false); else this.onSocketIoControl(conn, buf.toString('utf8', start, end)) }
        : (buf, start, end) => { if (isJsonEvent(buf, start)) this.onEvent(conn, buf, start, herald); else this.onJsonControl(conn, buf.toString('utf8', start, end)) },
      onClose: (why, beforeOpen) => {
        if (conn.ws !== ws) return
        if (beforeOpen) this.fail(conn, why)
        else this.lost(conn, why)
      }
    })
    conn.ws = ws
  }

  private onSocketIoControl (conn: Conn, text: string): void {
    const ws = conn.ws!
    if (text === '2') { ws.send('3'); return } // engine.io ping → pong
    if (text.startsWith('0')) { ws.send('40'); return } // engine.io open → socket.io connect to "/"
    if (text.startsWith('40')) {
      for (let k = 0; k < conn.subs.length; k++) ws.send('42' + (k + 1) + '["subscribe","' + this.channel(conn.subs[k].room) + '"]')
      return
    }
    if (text.startsWith('43')) {
      const k = parseInt(text.slice(2), 10) - 1
      const sub = conn.subs[k]
      if (sub !== undefined) this.onSubscribed(conn, sub)
      return
    }
    if (text.startsWith('44')) { this.fail(conn, 'socket.io connect_error'); return }
    if (text.startsWith('41') || text === '1') this.lost(conn, 'socket.io disconnect')
  }

  private onJsonControl (conn: Conn, text: string): void {
    let frame: { type?: string, channel?: string, code?: string, id?: string }
    try {
      frame = JSON.parse(text) as typeof frame
    } catch {
      this.count('bad frame')
      return
    }
    switch (frame.type) {
      case 'subscribed': {
        const room = this.roomOf(frame.channel)
        const sub = room === undefined ? undefined : conn.sub(room)
        if (sub !== undefined) this.onSubscribed(conn, sub)
        break
      }
      case 'error':
        this.count('error frame ' + String(frame.code))
        if (conn.state === 'subscribing') this.fail(conn, 'subscribe ' + String(frame.code))
        break
      case 'unsubscribed':
        this.count('unsubscribed')
        break
      case 'disconnect':
        this.count('disconnect frame ' + String(frame.code))
        break
    }
  }

  private roomOf (channel: string | undefined): number | undefined {
    if (channel === undefined || !channel.startsWith(this.cfg.channelPrefix)) return undefined
    const n = Number(channel.slice(this.cfg.channelPrefix.length))
    return Number.isInteger(n) ? n : undefined
  }

  private request (conn: Conn, path: string, agent: http.Agent | false, onResponse: (res: http.IncomingMessage) => void): http.ClientRequest {
    const url = new URL(conn.target + path)
    const mod = url.protocol === 'https:' ? https : http
    const req = mod.get(url, { agent, localAddress: conn.local, localPort: conn.localPort, headers: { accept: path.startsWith('/v1/sse') ? 'text/event-stream' : 'application/json' } }, onResponse)
    req.setNoDelay(true)
    return req
  }

  private openSse (conn: Conn): void {
    const qs = conn.subs.map((s) => 'channel=' + encodeURIComponent(this.channel(s.room))).join('&')
    const splitter = new SseSplitter((buf, start, end) => {
      if (isJsonEvent(buf, start)) this.onEvent(conn, buf, start, true)
      else this.onJsonControl(conn, buf.toString('utf8', start, end))
    })
    const req = this.request(conn, '/v1/sse?' + qs + '&token=' + conn.token!, false, (res) => {
      if (res.statusCode !== 200) { this.fail(conn, 'http ' + String(res.statusCode)); res.resume(); return }
      this.onConnected(conn)
      res.on('data', (chunk: Buffer) => splitter.push(chunk))
      res.on('end', () => { if (conn.req === req) this.lost(conn, 'sse ended') })
      res.on('error', () => { if (conn.req === req) this.lost(conn, 'sse error') })
    })
    conn.req = req
    req.on('error', (err: NodeJS.ErrnoException) => { if (conn.req === req) this.fail(conn, err.code ?? err.message) })
  }

  private openPoll (conn: Conn): void {
    conn.agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    this.poll(conn, 0)
  }

  /** One long-poll; the first (timeout 0, no cursor) places the cursor at the newest offsets: subscribed. */
  private poll (conn: Conn, timeout: number): void {
    if (this.closing || conn.state === 'failed' || conn.state === 'closed') return
    const qs = conn.subs.map((s) => 'channel=' + encodeURIComponent(this.channel(s.room))).join('&') +
      (conn.cursor !== undefined ? '&cursor=' + conn.cursor : '') + '&timeout=' + timeout + '&token=' + conn.token!
    const req = this.request(conn, '/v1/poll?' + qs, conn.agent!, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        if (conn.req !== req) return
        conn.req = undefined
        if (res.statusCode !== 200) {
          this.count('poll http ' + String(res.statusCode))
          if (conn.state === 'connecting') { this.fail(conn, 'http ' + String(res.statusCode)); return }
          setTimeout(() => this.poll(conn, this.cfg.pollTimeout), 500).unref()
          return
        }
        const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)
        if (conn.state === 'connecting') {
          this.onConnected(conn)
          for (const sub of conn.subs) this.onSubscribed(conn, sub)
        }
        let at = nextEvent(body, 0)
        while (at >= 0) {
          this.onEvent(conn, body, at, true)
          at = nextEvent(body, scan.end > at ? scan.end : at + 1)
        }
        conn.cursor = cursorOf(body) ?? conn.cursor
        this.poll(conn, this.cfg.pollTimeout)
      })
    })
    conn.req = req
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (conn.req !== req) return
      conn.req = undefined
      if (this.closing || conn.state === 'closed') return
      if (conn.state === 'connecting') { this.fail(conn, err.code ?? err.message); return }
      this.count('poll ' + (err.code ?? err.message))
      setTimeout(() => this.poll(conn, this.cfg.pollTimeout), 500).unref()
    })
  }

  private onConnected (conn: Conn): void {
    if (conn.state !== 'connecting') return
    conn.state = 'subscribing'
    conn.openedAt = nowMs()
    this.connected++
    this.connectHist.recordValue(Math.max(0, Math.round((conn.openedAt - conn.startedAt) * 1000)))
  }

  private onSubscribed (conn: Conn, sub: Sub): void {
    if (sub.subscribed || conn.state !== 'subscribing') return
    sub.subscribed = true
    if (--conn.pendingSubs > 0) return
    conn.state = 'ready'
    clearTimeout(conn.timer)
    this.pending--
    this.ready++
    const now = nowMs()
    this.lastReadyAt = now
    this.readyHist.recordValue(Math.max(0, Math.round((now - conn.startedAt) * 1000)))
    this.maybeReady()
    if (this.pacer === undefined && this.next < this.conns.length) this.pace()
  }

  private fail (conn: Conn, why: string): void {
    if (conn.state === 'failed' || conn.state === 'closed' || conn.state === 'ready') {
      if (conn.state === 'ready') this.lost(conn, why)
      return
    }
    // The local port we picked is taken (by another program, or a socket of ours still closing): try another.
    if ((why === 'EADDRINUSE' || why === 'EADDRNOTAVAIL') && conn.localPort !== undefined && conn.state === 'connecting' && conn.retries < 5 && this.cfg.localPorts !== null) {
      conn.retries++
      this.count('local port busy, retried')
      const lp = this.cfg.localPorts
      conn.localPort = lp.base + (conn.localPort - lp.base + 4099 * conn.retries) % lp.count
      clearTimeout(conn.timer)
      const old = conn
      this.teardown(old)
      conn.ws = undefined
      conn.req = undefined
      conn.agent = undefined
      this.pending--
      this.opened--
      setImmediate(() => { if (!this.closing) this.open(conn) })
      return
    }
    const wasPending = conn.state === 'connecting' || conn.state === 'subscribing'
    conn.state = 'failed'
    clearTimeout(conn.timer)
    this.count('connect: ' + why)
    this.failed++
    if (wasPending) this.pending--
    this.teardown(conn)
    this.maybeReady()
    if (this.pacer === undefined && this.next < this.conns.length) this.pace()
  }

  /** A ready connection went away during the run (its events from then on count as lost). */
  private lost (conn: Conn, why: string): void {
    if (this.closing) return
    if (conn.state === 'connecting' || conn.state === 'subscribing') { this.fail(conn, why); return }
    if (conn.state !== 'ready') return
    conn.state = 'closed'
    this.dropped++
    this.count('dropped: ' + why)
    this.teardown(conn)
  }

  private teardown (conn: Conn): void {
    try {
      conn.ws?.terminate()
      conn.req?.destroy()
      conn.agent?.destroy()
    } catch {}
  }

  private maybeReady (): void {
    if (this.readySent || this.ready + this.failed < this.conns.length) return
    this.readySent = true
    const roomSubs = new Array<number>(this.cfg.rooms).fill(0)
    for (const conn of this.conns) if (conn.state === 'ready') for (const sub of conn.subs) roomSubs[sub.room]++
    this.send({
      type: 'ready',
      index: this.cfg.index,
      roomSubs,
      ready: this.ready,
      failed: this.failed,
      allReadyMicros: this.ready === 0 ? 0 : Math.max(0, Math.round((this.lastReadyAt - this.cfg.startAt) * 1000)),
      connectHist: encode(this.connectHist),
      readyHist: encode(this.readyHist),
      errors: { ...this.errors }
    })
  }

  // ---------------------------------------------------------------- events

  /** The hot path: one event frame in `buf` at `at`. */
  private onEvent (conn: Conn, buf: Buffer, at: number, withOffset: boolean): void {
    const now = nowMs()
    if (!scanEvent(buf, at, withOffset)) { this.count('unreadable event'); return }
    this.delivered++
    if (now >= this.measureFrom) {
      this.windowCount++
      if (now <= this.measureEnd) this.inWindow++
    }
    const t = scan.t
    if (t >= this.measureFrom) {
      let us = Math.round((now - t) * 1000)
      if (us < 0) { this.negative++; us = 0 }
      this.hist.recordValue(us)
      this.interval.recordValue(us)
      this.measured++
    }
    const sub = conn.sub(scan.c)
    if (sub === undefined) { this.unknown++; return }
    if (withOffset) {
      const off = scan.offset
      if (sub.lastOffset >= 0) {
        if (off <= sub.lastOffset) sub.offsetDups++
        else if (off !== sub.lastOffset + 1) sub.offsetGaps += off - sub.lastOffset - 1
      }
      if (off > sub.lastOffset) sub.lastOffset = off
    }
    const before = sub.uniq
    sub.record(scan.s)
    if (sub.uniq !== before) this.uniq++
  }

  private stage (measureFrom: number, measureEnd: number): void {
    this.measureFrom = measureFrom
    this.measureEnd = measureEnd
    this.inWindow = 0
    this.hist.destroy()
    this.hist = newHistogram()
    this.interval.reset()
    this.measured = 0
    this.windowCount = 0
    this.negative = 0
    this.lag.reset()
  }

  private stageReport (maxSeq: number[], failed: Map<number, number[]>): StageReport {
    let expected = 0
    let lost = 0
    let dups = 0
    let gaps = 0
    let offDups = 0
    let subsWithLoss = 0
    const examples: StageReport['lossExamples'] = []
    for (const conn of this.conns) {
      if (conn.state !== 'ready' && conn.state !== 'closed') continue
      for (const sub of conn.subs) {
        if (!sub.subscribed) continue
        const top = maxSeq[sub.room] ?? 0
        const bad = failed.get(sub.room) ?? []
        const want = top - bad.length
        let got = sub.uniq
        for (const s of bad) if (sub.has(s)) got--
        expected += want
        dups += sub.dups
        gaps += sub.offsetGaps
        offDups += sub.offsetDups
        if (got < want) {
          lost += want - got
          subsWithLoss++
          if (examples.length < 5) examples.push({ conn: conn.i, room: sub.room, transport: conn.transport, expected: want, got })
        }
      }
    }
    const cpu = process.cpuUsage(this.cpuStart)
    if (this.unknown > 0) this.errors['event for an unsubscribed room'] = this.unknown
    const report: StageReport = {
      type: 'stageReport',
      index: this.cfg.index,
      hist: encode(this.hist),
      measured: this.measured,
      windowCount: this.windowCount,
      inWindow: this.inWindow,
      delivered: this.delivered,
      uniq: this.uniq,
      dups,
      offsetGaps: gaps,
      offsetDups: offDups,
      negative: this.negative,
      expected,
      lost,
      subsWithLoss,
      lossExamples: examples,
      dropped: this.dropped,
      cpuMicros: cpu.user + cpu.system,
      lagP99Ms: this.lag.percentile(99) / 1e6,
      lagMaxMs: this.lag.max / 1e6,
      errors: { ...this.errors }
    }
    this.measureFrom = Number.POSITIVE_INFINITY
    return report
  }

  private progress (): FromWorker {
    const h = this.interval
    const interval = { n: h.totalCount, p50: h.getValueAtPercentile(50) / 1000, p99: h.getValueAtPercentile(99) / 1000, max: h.maxValue / 1000 }
    h.reset()
    const cpu = process.cpuUsage(this.cpuStart)
    return {
      type: 'progress',
      index: this.cfg.index,
      opened: this.opened,
      connected: this.connected,
      ready: this.ready,
      failed: this.failed,
      pending: this.pending,
      dropped: this.dropped,
      delivered: this.delivered,
      uniq: this.uniq,
      windowCount: this.windowCount,
      inWindow: this.inWindow,
      interval,
      cpuMicros: cpu.user + cpu.system,
      lagP99Ms: this.lag.percentile(99) / 1e6,
      errors: { ...this.errors }
    }
  }

  private count (what: string): void {
    this.errors[what] = (this.errors[what] ?? 0) + 1
  }

  private close (): void {
    this.closing = true
    clearTimeout(this.pacer)
    clearInterval(this.progressTimer)
    for (const conn of this.conns) {
      clearTimeout(conn.timer)
      if (conn.state !== 'failed') conn.state = 'closed'
      this.teardown(conn)
    }
    this.lag.disable()
    this.send({ type: 'closed', index: this.cfg?.index ?? -1 })
  }
}

// ---------------------------------------------------------------- as a child process

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1] && process.send !== undefined) {
  const send = (msg: FromWorker): void => { process.send!(msg) }
  const generator = new Generator(send)
  process.on('message', (msg: ToWorker) => {
    try {
      generator.handle(msg)
    } catch (err) {
      send({ type: 'fatal', index: -1, message: String((err as Error).stack ?? err) })
    }
    if (msg.type === 'close') setTimeout(() => process.exit(0), 200).unref()
  })
  // The coordinator went away: so do we (never outlive the run).
  process.on('disconnect', () => process.exit(0))
  send({ type: 'hello' })
}

import net from 'node:net'
import { createHash, randomBytes } from 'node:crypto'

/**
 * A minimal WebSocket client for the load generator, lean enough that tens of thousands of them in one process
 * cost little: `net.connect` with `onread` (every socket reads into one shared buffer; no stream machinery, no
 * Buffer per read), the HTTP upgrade written by hand, and server frames parsed in place. Text messages are handed
 * over as (buffer, start, end) views that are only valid during the callback.
 *
 * Client frames are masked with a zero key (valid framing; the payload needs no XOR). Pings are answered.
 * Fragmented messages are reassembled. No extensions (no permessage-deflate).
 */
export interface RawWsHandlers {
  onOpen: () => void
  onMessage: (buf: Buffer, start: number, end: number) => void
  /** The connection is gone: a close code, or a reason such as `http 401`, `ECONNRESET`. Called once. */
  onClose: (why: string, beforeOpen: boolean) => void
}

export interface RawWsOptions {
  host: string
  port: number
  path: string
  localAddress?: string
  localPort?: number
  headers?: Record<string, string>
}

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
const SHARED = Buffer.allocUnsafe(256 * 1024)
const HEADER_END = Buffer.from('\r\n\r\n')

export class RawWs {
  private readonly socket: net.Socket
  private open = false
  private done = false
  private readonly key: string
  private pending: Buffer | null = null
  private fragments: Buffer[] | null = null
  private fragOpcode = 0

  constructor (private readonly o: RawWsOptions, private readonly h: RawWsHandlers) {
    this.key = randomBytes(16).toString('base64')
    this.socket = net.connect({
      host: o.host,
      port: o.port,
      localAddress: o.localAddress,
      localPort: o.localPort,
      noDelay: true,
      onread: { buffer: SHARED, callback: (n: number, buf: Uint8Array) => { this.onData(buf as Buffer, n); return true } }
    })
    this.socket.on('connect', () => {
      let req = `GET ${o.path} HTTP/1.1\r\nHost: ${o.host}:${o.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n`
      for (const [k, v] of Object.entries(o.headers ?? {})) req += `${k}: ${v}\r\n`
      this.socket.write(req + '\r\n')
    })
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.finish(err.code ?? err.message))
    this.socket.on('close', () => this.finish(this.open ? 'closed' : 'closed before upgrade'))
  }

  get isOpen (): boolean { return this.open && !this.done }

  /** Sends a text frame. */
  send (text: string): void {
    if (!this.isOpen) return
    this.socket.write(frame(0x1, Buffer.from(text)))
  }

  terminate (): void {
    if (this.done) return
    this.done = true
    this.socket.destroy()
  }

  private finish (why: string): void {
    if (this.done) return
    this.done = true
    this.socket.destroy()
    this.h.onClose(why, !this.open)
  }

  private onData (chunk: Buffer, n: number): void {
    if (this.done) return
    let buf = chunk
    let end = n
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, chunk.subarray(0, n)])
      end = buf.length
      this.pending = null
    }
    let pos = 0
    if (!this.open) {
      const h = buf.indexOf(HEADER_END)
      if (h < 0 || h >= end) { this.pending = Buffer.from(buf.subarray(0, end)); return }
      const head = buf.toString('latin1', 0, h)
      const status = /^HTTP\/1\.1 (\d{3})/.exec(head)
      if (status === null || status[1] !== '101') { this.finish('http ' + (status?.[1] ?? '?')); return }
      const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head)?.[1]
      if (accept !== createHash('sha1').update(this.key + GUID).digest('base64')) { this.finish('bad Sec-WebSocket-Accept'); return }
      this.open = true
      pos = h + 4
      this.h.onOpen()
      if (this.done) return
    }
    while (pos < end) {
      if (end - pos < 2) break
      const b0 = buf[pos]
      const b1 = buf[pos + 1]
      let len = b1 & 0x7f
      let at = pos + 2
      if (len === 126) {
        if (end - pos < 4) break
        len = buf.readUInt16BE(pos + 2)
        at = pos + 4
      } else if (len === 127) {
        if (end - pos < 10) break
        len = buf.readUInt32BE(pos + 2) * 2 ** 32 + buf.readUInt32BE(pos + 6)
        at = pos + 10
      }
      if ((b1 & 0x80) !== 0) { this.finish('masked server frame'); return }
      if (end - at < len) break
      const fin = (b0 & 0x80) !== 0
      const opcode = b0 & 0x0f
      const stop = at + len
      pos = stop
      if (opcode === 0x1 || opcode === 0x2) {
        if (fin) this.h.onMessage(buf, at, stop)
        else { this.fragments = [Buffer.from(buf.subarray(at, stop))]; this.fragOpcode = opcode }
      } else if (opcode === 0x0) {
        if (this.fragments === null) { this.finish('unexpected continuation'); return }
        this.fragments.push(Buffer.from(buf.subarray(at, stop)))
        if (fin) {
          const whole = Buffer.concat(this.fragments)
          this.fragments = null
          if (this.fragOpcode === 0x1 || this.fragOpcode === 0x2) this.h.onMessage(whole, 0, whole.length)
        }
      } else if (opcode === 0x9) {
        this.socket.write(frame(0xA, Buffer.from(buf.subarray(at, stop))))
      } else if (opcode === 0x8) {
        const code = len >= 2 ? buf.readUInt16BE(at) : 1005
        this.finish('close ' + String(code))
        return
      }
      if (this.done) return
    }
    if (pos < end) this.pending = Buffer.from(buf.subarray(pos, end))
  }
}

/** A masked client frame with a zero masking key. */
function frame (opcode: number, payload: Buffer): Buffer {
  const len = payload.length
  const headLen = len < 126 ? 2 : len < 65536 ? 4 : 10
  const out = Buffer.allocUnsafe(headLen + 4 + len)
  out[0] = 0x80 | opcode
  if (len < 126) out[1] = 0x80 | len
  else if (len < 65536) { out[1] = 0x80 | 126; out.writeUInt16BE(len, 2) } else { out[1] = 0x80 | 127; out.writeUInt32BE(Math.floor(len / 2 ** 32), 2); out.writeUInt32BE(len >>> 0, 6) }
  out.writeUInt32BE(0, headLen)
  payload.copy(out, headLen + 4)
  return out
}

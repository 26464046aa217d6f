/**
 * The "ceiling for Node" benchmark peer: a bare `ws` server with an ioredis pub/sub fan-out and nothing else
 * (no auth, no offsets, no history, no backpressure policy, no metrics).
 *
 *   client → {"type":"subscribe","channel":"room","id":"1"}   server → {"type":"subscribed","channel":"room"}
 *   client → {"type":"publish","channel":"room","data":…,"id":"2"}   server → {"type":"ack","id":"2"}
 *   server → {"type":"event","channel":"room","data":…}
 *   POST /v1/channels/:channel/events {"data":…} → 201
 *
 * A publish is serialised once (`JSON.stringify` of the frame), PUBLISHed to Redis, and each node sends the very
 * Buffer it receives from Redis to every local subscriber of the channel.
 *
 *   PORT=4000 REDIS_URL=redis://127.0.0.1:6380 node --import tsx bench/peers/bare-ws.ts
 */
import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { WebSocketServer, type WebSocket } from 'ws'
import { Redis } from 'ioredis'
import { httpHandler, peerEnv } from './common.js'

const PREFIX = 'bare:'

export interface BarePeer { port: number, url: string, close: () => Promise<void> }

export async function startBareWs (opts: { port: number, host?: string, redisUrl: string }): Promise<BarePeer> {
  const pub = new Redis(opts.redisUrl, { connectionName: 'bare-pub' })
  const sub = new Redis(opts.redisUrl, { connectionName: 'bare-sub' })
  for (const r of [pub, sub]) r.on('error', (err: Error) => process.stderr.write(`bare-ws redis: ${err.message}\n`))
  /** Redis channel (Buffer as latin1 string) → local sockets. */
  const rooms = new Map<string, Set<WebSocket>>()
  /** Redis channel → its SUBSCRIBE in progress or done. */
  const ready = new Map<string, Promise<unknown>>()

  sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
    const set = rooms.get(channel.toString('latin1'))
    if (set === undefined) return
    for (const ws of set) ws.send(message, { binary: false })
  })

  const publish = async (channel: string, data: unknown): Promise<void> => {
    await pub.publish(PREFIX + channel, JSON.stringify({ type: 'event', channel, data }))
  }

  const server = http.createServer(httpHandler(publish))
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1024 * 1024 })
  server.on('upgrade', (req, socket, head) => {
    if ((req.url ?? '').split('?')[0] !== '/v1/ws') { socket.destroy(); return }
    wss.handleUpgrade(req, socket, head, (ws) => { onConnection(ws) })
  })

  function onConnection (ws: WebSocket): void {
    const mine = new Set<string>()
    ws.on('message', (raw: Buffer) => {
      let frame: { type?: string, channel?: unknown, data?: unknown, id?: unknown }
      try {
        frame = JSON.parse(raw.toString()) as typeof frame
      } catch {
        ws.send('{"type":"error","code":"BAD_FRAME"}')
        return
      }
      const channel = typeof frame.channel === 'string' ? frame.channel : undefined
      const id = frame.id === undefined ? undefined : String(frame.id)
      if (channel === undefined) { ws.send(JSON.stringify({ type: 'error', code: 'BAD_FRAME', id })); return }
      if (frame.type === 'subscribe') {
        const key = PREFIX + channel
        if (mine.has(key)) return
        mine.add(key)
        let set = rooms.get(key)
        if (set === undefined) { set = new Set(); rooms.set(key, set) }
        set.add(ws)
        let p = ready.get(key)
        if (p === undefined) { p = sub.subscribe(key); ready.set(key, p) }
        p.then(() => ws.send(JSON.stringify({ type: 'subscribed', channel, id })), () => ws.send(JSON.stringify({ type: 'error', code: 'BUS', channel, id })))
      } else if (frame.type === 'publish') {
        publish(channel, frame.data).then(() => ws.send(JSON.stringify({ type: 'ack', id, channel })), () => ws.send(JSON.stringify({ type: 'error', code: 'BUS', id })))
      }
    })
    ws.on('close', () => {
      for (const key of mine) {
        const set = rooms.get(key)
        if (set === undefined) continue
        set.delete(ws)
        if (set.size === 0) {
          rooms.delete(key)
          ready.delete(key)
          sub.unsubscribe(key).catch(() => {})
        }
      }
    })
    ws.on('error', () => {})
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => resolve())
  })
  const port = (server.address() as { port: number }).port
  return {
    port,
    url: `http://${opts.host ?? '127.0.0.1'}:${port}`,
    close: async () => {
      for (const ws of wss.clients) ws.terminate()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      pub.disconnect()
      sub.disconnect()
    }
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const env = peerEnv()
  startBareWs({ port: env.port, host: env.host, redisUrl: env.redisUrl }).then((peer) => {
    process.stdout.write(`bare-ws peer listening on ${peer.url}\n`)
    const stop = (): void => { void peer.close().finally(() => process.exit(0)) }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  }, (err: unknown) => {
    process.stderr.write(String((err as Error).stack ?? err) + '\n')
    process.exit(1)
  })
}

/**
 * The Socket.IO 4 benchmark peer: websocket transport only, @socket.io/redis-adapter over ioredis.
 *
 *   client: socket.emit('subscribe', room, ack)          → socket.join(room); ack()
 *   client: socket.emit('publish', room, data, ack)      → io.to(room).emit('event', {channel, data}); ack()
 *   server: io.to(room).emit('event', {channel: room, data})
 *   POST /v1/channels/:channel/events {"data":…} → io.to(channel).emit('event', …); 201
 *
 * (With the Redis adapter, an emit is broadcast to this node's sockets directly and PUBLISHed for the others.)
 *
 *   PORT=4001 REDIS_URL=redis://127.0.0.1:6380 node --import tsx bench/peers/socketio.ts
 */
import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { Server } from 'socket.io'
import { createAdapter } from '@socket.io/redis-adapter'
import { Redis } from 'ioredis'
import { httpHandler, peerEnv } from './common.js'

export interface SocketIoPeer { port: number, url: string, close: () => Promise<void> }

export async function startSocketIo (opts: { port: number, host?: string, redisUrl: string }): Promise<SocketIoPeer> {
  const pub = new Redis(opts.redisUrl, { connectionName: 'sio-pub' })
  const sub = pub.duplicate({ connectionName: 'sio-sub' })
  for (const r of [pub, sub]) r.on('error', (err: Error) => process.stderr.write(`socket.io peer redis: ${err.message}\n`))
  let io: Server | undefined
  const server = http.createServer(httpHandler((channel, data) => { io!.to(channel).emit('event', { channel, data }) }))
  io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false, maxHttpBufferSize: 1024 * 1024 })
  io.adapter(createAdapter(pub, sub))
  io.on('connection', (socket) => {
    socket.on('subscribe', (room: unknown, ack?: unknown) => {
      if (typeof room !== 'string') return
      void Promise.resolve(socket.join(room)).then(() => { if (typeof ack === 'function') ack({ ok: true }) })
    })
    socket.on('publish', (room: unknown, data: unknown, ack?: unknown) => {
      if (typeof room !== 'string') return
      io!.to(room).emit('event', { channel: room, data })
      if (typeof ack === 'function') ack({ ok: true })
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => resolve())
  })
  const port = (server.address() as { port: number }).port
  return {
    port,
    url: `http://${opts.host ?? '127.0.0.1'}:${port}`,
    close: async () => {
      io!.disconnectSockets(true)
      await new Promise<void>((resolve) => { io!.close(() => resolve()) })
      pub.disconnect()
      sub.disconnect()
    }
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const env = peerEnv()
  startSocketIo({ port: env.port, host: env.host, redisUrl: env.redisUrl }).then((peer) => {
    process.stdout.write(`socket.io peer listening on ${peer.url}\n`)
    const stop = (): void => { void peer.close().finally(() => process.exit(0)) }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  }, (err: unknown) => {
    process.stderr.write(String((err as Error).stack ?? err) + '\n')
    process.exit(1)
  })
}

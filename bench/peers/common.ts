import type { IncomingMessage, ServerResponse } from 'node:http'

/** Body limit of the peers' publish endpoint (Herald's MAX_BODY_BYTES default). */
export const MAX_BODY = 64 * 1024

const PUBLISH_PATH = /^\/v1\/channels\/([^/]+)\/events$/

/**
 * The publish endpoint every benchmark peer adds so that REST publishing is comparable with Herald's:
 * `POST /v1/channels/:channel/events` with `{"data": …}` → 201 `{"channel": …}`; `GET /healthz` → 200.
 * `publish` returns once the event is handed to the peer's bus.
 */
export function httpHandler (publish: (channel: string, data: unknown) => Promise<void> | void) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/'
    if (req.method === 'GET' && url === '/healthz') { reply(res, 200, '{"ok":true}'); return }
    const m = req.method === 'POST' ? PUBLISH_PATH.exec(url.split('?')[0]) : null
    if (m === null) { reply(res, 404, '{"error":"not found"}'); return }
    let channel: string
    try {
      channel = decodeURIComponent(m[1])
    } catch {
      reply(res, 400, '{"error":"bad channel"}')
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > MAX_BODY) { reply(res, 413, '{"error":"too large"}'); req.destroy(); return }
      chunks.push(c)
    })
    req.on('end', () => {
      if (res.writableEnded) return
      let body: { data?: unknown }
      try {
        body = JSON.parse(Buffer.concat(chunks).toString()) as { data?: unknown }
      } catch {
        reply(res, 400, '{"error":"malformed json"}')
        return
      }
      if (body === null || typeof body !== 'object' || !('data' in body)) { reply(res, 400, '{"error":"data is required"}'); return }
      Promise.resolve(publish(channel, body.data)).then(
        () => reply(res, 201, '{"channel":' + JSON.stringify(channel) + '}'),
        () => reply(res, 503, '{"error":"bus unavailable"}'))
    })
  }
}

function reply (res: ServerResponse, status: number, body: string): void {
  if (res.writableEnded) return
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

/** PORT, HOST and REDIS_URL of a peer started as a child process. */
export function peerEnv (): { port: number, host: string, redisUrl: string } {
  const redisUrl = process.env.REDIS_URL
  if (redisUrl === undefined || redisUrl === '') throw new Error('REDIS_URL is required')
  return { port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '127.0.0.1', redisUrl }
}

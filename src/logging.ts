import type { FastifyRequest } from 'fastify'

/** Log redaction: tokens never reach the logs, wherever they travel. */
export const REDACT = ['req.headers.authorization', 'req.query.token', 'headers.authorization', '*.token', 'token']

/** The URL with the value of every query parameter whose decoded name is `token` replaced. */
export function redactUrl (url: string): string {
  const q = url.indexOf('?')
  if (q === -1) return url
  return url.slice(0, q + 1) + url.slice(q + 1).split('&').map((part) => {
    const eq = part.indexOf('=')
    const key = eq === -1 ? part : part.slice(0, eq)
    let name = key
    try { name = decodeURIComponent(key.replace(/\+/g, ' ')) } catch {}
    return name === 'token' ? key + '=[redacted]' : part
  }).join('&')
}

/**
 * The request serializer of every Herald route, whatever logger the host gave Fastify: method, URL with any token
 * redacted, and the client address. Fastify's default one logs the raw URL, `?token=` included.
 */
export function serializeRequest (req: FastifyRequest): { method: string, url: string, remoteAddress: string } {
  return { method: req.method, url: redactUrl(String(req.url)), remoteAddress: req.ip }
}

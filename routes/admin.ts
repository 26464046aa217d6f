import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Errors } from '../src/errors.js'
import { packageRoot } from '../src/version.js'

/**
 * The admin console (docs/operations.md): a static page, its stylesheet and its script, served only with
 * ADMIN_ENABLED. It holds no authority of its own: the page signs in with a server API key and calls /v1/api/….
 */
export const ADMIN_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join('; ')

const hidden = { schema: { hide: true } }

const adminRoutes: FastifyPluginAsync = async (fastify) => {
  const config = fastify.heraldConfig
  const dir = join(packageRoot, 'public', 'admin')
  let bundle: Promise<string> | undefined

  // As the client bundle (routes/static.ts): the built file in production, else bundled in memory from the sources.
  async function adminBundle (): Promise<string> {
    const built = join(packageRoot, 'dist', 'public', 'admin.js')
    if (config.production && existsSync(built)) return readFileSync(built, 'utf8')
    const { buildAdmin } = await import('../client/admin/build.js')
    return await buildAdmin()
  }

  function secure (reply: FastifyReply, type: string): FastifyReply {
    return reply.type(type)
      .header('content-security-policy', ADMIN_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('x-frame-options', 'DENY')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-store')
  }

  const enabled = (): void => { if (!config.admin.enabled) throw new Errors.ADMIN_DISABLED() }

  // Relative URLs in the page (admin.js, ../v1/api) need the trailing slash, under any prefix Herald is mounted at.
  fastify.get('/admin', hidden, async (request, reply) => {
    enabled()
    return reply.redirect(request.url.split('?')[0] + '/')
  })
  fastify.get('/admin/', hidden, async (_request, reply) => {
    enabled()
    return secure(reply, 'text/html; charset=utf-8').send(readFileSync(join(dir, 'index.html'), 'utf8'))
  })
  fastify.get('/admin/admin.css', hidden, async (_request, reply) => {
    enabled()
    return secure(reply, 'text/css; charset=utf-8').send(readFileSync(join(dir, 'admin.css'), 'utf8'))
  })
  fastify.get('/admin/admin.js', hidden, async (_request, reply) => {
    enabled()
    bundle ??= adminBundle()
    const code = await bundle.catch((err: unknown) => { bundle = undefined; throw err })
    return secure(reply, 'text/javascript; charset=utf-8').send(code)
  })
}

export default adminRoutes

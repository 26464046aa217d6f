import type { FastifyPluginAsync } from 'fastify'
import fastifyStatic from '@fastify/static'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import Type from 'typebox'
import { packageRoot } from '../src/version.js'

/**
 * The browser side: the client library bundle at a stable path, the demo page at `/`, and — in development only —
 * a route that hands the demo a token.
 */
const staticRoutes: FastifyPluginAsync = async (fastify) => {
  const config = fastify.heraldConfig
  let bundle: Promise<string> | undefined

  // In production, the bundle `npm run build:client` made (the Docker image does; esbuild is not installed there).
  // Otherwise bundled once, in memory, from the current sources on first request, so it is never stale.
  async function clientBundle (): Promise<string> {
    const built = join(packageRoot, 'dist', 'public', 'herald.js')
    if (config.production && existsSync(built)) return readFileSync(built, 'utf8')
    const { buildClient } = await import('../client/build.js')
    return await buildClient()
  }

  fastify.get('/client/herald.js', { schema: { summary: 'The Herald client library (one ESM bundle)', tags: ['client'], produces: ['text/javascript'] } }, async (_request, reply) => {
    bundle ??= clientBundle()
    const code = await bundle.catch((err: unknown) => { bundle = undefined; throw err })
    return reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(code)
  })

  // Never with a configured key: see HeraldConfig.devToken.
  if (config.devToken && !config.production && config.jwt.secret !== undefined) {
    fastify.get('/dev/token', {
      schema: {
        summary: 'Development only: a token for the demo page',
        description: 'Only in a standalone development server that generated its own secret (no JWT key configured); never in production or with a configured key. Signs a 1-hour token for `sub` (random when omitted) that may subscribe to everything and publish to `chat:*` and `demo:*`.',
        tags: ['client'],
        querystring: Type.Object({ sub: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.@-]{1,64}$' })) }),
        response: { 200: Type.Object({ token: Type.String(), sub: Type.String() }) }
      }
    }, async (request) => {
      const { sub = 'guest-' + randomBytes(3).toString('hex') } = request.query as { sub?: string }
      const token = fastify.jwt.sign({ sub, subscribe: ['*'], publish: ['chat:*', 'demo:*'], info: { name: sub } }, { expiresIn: '1h' })
      return { token, sub }
    })
  }

  const publicDir = join(packageRoot, 'public')
  // public/admin/ is the admin console's: routes/admin.ts serves it (with its CSP), and only when it is enabled.
  if (existsSync(publicDir)) {
    await fastify.register(fastifyStatic, {
      root: publicDir,
      prefix: '/',
      index: 'index.html',
      decorateReply: false,
      allowedPath: (pathName) => !pathName.startsWith('/admin/')
    })
  }
}

export default staticRoutes

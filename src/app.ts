import type { FastifyInstance, FastifyError } from 'fastify'
import fp from 'fastify-plugin'
import fastifyCors from '@fastify/cors'
import fastifySwagger from '@fastify/swagger'
import fastifyWebsocket from '@fastify/websocket'
import fastifyRateLimit, { type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import { syncedRedisStore } from './plugins/rate-limit-store.js'
import { Redis } from 'ioredis'
import { redisOptions } from './bus/redis-connection.js'
import { randomBytes } from 'node:crypto'
import { type HeraldConfig, defaultConfig } from './config.js'
import type { Broker } from './bus/broker.js'
import type { HeraldContext } from './context.js'
import { createBroker } from './bus/index.js'
import { Hub } from './hub/hub.js'
import { Connections } from './hub/connections.js'
import { Metrics } from './metrics.js'
import { CloseCodes } from './protocol/codes.js'
import { Errors, errorBody, isHeraldError, type HeraldError } from './errors.js'
import { Namespaces, loadNamespacesFile } from './namespaces.js'
import { PresenceTracker } from './presence/tracker.js'
import { MemoryPresence } from './presence/presence-memory.js'
import { RedisPresence } from './presence/presence-redis.js'
import type { PresenceStore } from './presence/presence.js'
import type { Principal } from './auth/permissions.js'
import authPlugin from './plugins/auth.js'
import healthRoutes from '../routes/health.js'
import channelRoutes from '../routes/v1/channels.js'
import wsRoutes from '../routes/v1/ws.js'
import sseRoutes from '../routes/v1/sse.js'
import pollRoutes from '../routes/v1/poll.js'
import openapiRoutes from '../routes/openapi.js'
import staticRoutes from '../routes/static.js'
import { version } from './version.js'
import { MAX_JSON_DEPTH, nestedDeeperThan } from './protocol/json.js'

declare module 'fastify' {
  interface FastifyInstance {
    herald: HeraldContext & {
      /** Starts a graceful drain: readyz fails, new connections are refused, open ones are told to reconnect elsewhere. */
      drain: () => void
    }
  }
}

export interface HeraldOptions {
  /** Settings; anything left out takes the documented default (the environment is not read). */
  config?: Partial<HeraldConfig>
  /** Use this bus instead of building one from the config; the caller then owns closing it. */
  broker?: Broker
  /** Use this presence store instead of building one; the caller then owns closing it. */
  presence?: PresenceStore
  /** Identity of this node in connection ids and logs (random by default). */
  nodeId?: string
  /** Collect process metrics (default true; turn off when several instances share a process). */
  defaultMetrics?: boolean
  /** Mount every Herald route under this path (e.g. `/realtime`). */
  prefix?: string
}

/**
 * Herald as a Fastify plugin. The standalone server registers it at the root; another application may
 * `register(herald, { prefix: '/realtime', config: {...} })` next to its own routes. It decorates the
 * application with `herald` (the context: bus, hub, connections, metrics, `drain()`); its routes, error
 * handlers and third-party plugins stay encapsulated in a child scope under the prefix.
 */
async function heraldPlugin (fastify: FastifyInstance, opts: HeraldOptions): Promise<void> {
  const config = defaultConfig(opts.config)
  const log = fastify.log as unknown as HeraldContext['log']
  const broker = opts.broker ?? createBroker(config, log)
  const ownsBroker = opts.broker === undefined
  const nodeId = opts.nodeId ?? randomBytes(3).toString('hex')
  const connections = new Connections(nodeId)
  const namespaces = new Namespaces(config.namespaces ?? (config.namespacesFile !== undefined ? loadNamespacesFile(config.namespacesFile) : {}),
    { historySize: config.history.size, historyTtl: config.history.ttlSeconds })
  let store = opts.presence
  const ownsPresence = store === undefined && namespaces.anyPresence
  if (ownsPresence) {
    store = config.redisUrl !== undefined
      ? new RedisPresence({ url: config.redisUrl, prefix: config.redisPrefix, ttlSeconds: config.presence.ttlSeconds, log })
      : new MemoryPresence()
  }
  let hub: Hub | undefined
  const presence = store === undefined
    ? undefined
    : new PresenceTracker({ store, namespaces, log, ttlSeconds: config.presence.ttlSeconds, batchMs: config.presence.batchMs, broadcast: (channel, frame) => hub?.broadcast(channel, frame) })
  let metrics: Metrics | undefined
  hub = new Hub({
    broker,
    log,
    namespaces,
    presence,
    replayLimit: Math.max(config.history.size, 1),
    onDispatch: (pub) => metrics?.latency.observe((Date.now() - pub.ts) / 1000),
    onReconnect: () => metrics?.busReconnects.inc()
  })
  metrics = new Metrics(connections, hub, opts.defaultMetrics ?? true)
  const ctx = {
    nodeId, config, broker, hub, connections, metrics, log, namespaces, presence, draining: false,
    verifyToken: async (_token: string): Promise<Principal> => { throw new Errors.UNAUTHORIZED('auth not ready') },
    channelOptions (channel: string) {
      const options = namespaces.of(channel)
      if (options === undefined) throw new Errors.UNKNOWN_NAMESPACE(channel)
      return options
    },
    drain () {
      if (ctx.draining) return
      ctx.draining = true
      connections.closeAll(CloseCodes.SERVICE_RESTART, 'server shutting down; reconnect to another node')
    }
  }
  fastify.decorate('herald', ctx)
  // Drain before @fastify/websocket's own preClose closes every socket without a code (1005): clients get 1012.
  fastify.addHook('preClose', (done) => { ctx.drain(); done() })

  if (ownsBroker) await broker.connect()
  if (ownsPresence) await store!.connect()
  // REST rate limits are shared by every node through Redis when there is one.
  const rateLimitRedis = config.redisUrl === undefined
    ? undefined
    : new Redis(config.redisUrl, redisOptions('herald-ratelimit', () => ctx.draining, { commandTimeout: 1000 }))
  rateLimitRedis?.on('error', () => {})
  await rateLimitRedis?.connect()
  fastify.addHook('onClose', async () => {
    rateLimitRedis?.disconnect()
    ctx.drain()
    hub!.close()
    presence?.close()
    if (ownsPresence) await store!.close()
    if (ownsBroker) await broker.close()
  })

  await fastify.register(async (scope) => { await routes(scope, config, ctx, rateLimitRedis) }, { prefix: opts.prefix ?? '' })
}

async function routes (fastify: FastifyInstance, config: HeraldConfig, ctx: FastifyInstance['herald'], rateLimitRedis?: Redis): Promise<void> {
  await fastify.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Herald', version, description: 'Real-time event gateway. WebSocket and SSE frames: docs/protocol.md; error codes: docs/errors.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } }
    }
  })
  await fastify.register(fastifyCors, { origin: config.corsOrigins === '*' ? '*' : config.corsOrigins, exposedHeaders: ['Retry-After'] })
  await fastify.register(authPlugin, { config })
  ctx.verifyToken = fastify.verifyToken
  if (!fastify.hasDecorator('websocketServer')) {
    await fastify.register(fastifyWebsocket, {
      options: {
        maxPayload: Math.max(config.maxFrameBytes * 4, 1024 * 1024),
        perMessageDeflate: config.ws.compression ? { threshold: config.ws.compressionThreshold } : false
      }
    })
  }

  // Fastify's own JSON parser (prototype keys refused), behind a depth check: see protocol/json.ts.
  const parseJson = fastify.getDefaultJsonParser('error', 'error')
  fastify.removeContentTypeParser('application/json')
  fastify.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (nestedDeeperThan(body as string)) { done(new Errors.VALIDATION(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`), undefined); return }
    parseJson(request, body as string, done)
  })

  fastify.setErrorHandler((err: FastifyError, request, reply) => {
    const herr = toHeraldError(err, config)
    if (herr.statusCode >= 500 && herr.code === 'HERALD_ERR_INTERNAL') request.log.error({ err }, 'request failed')
    ctx.metrics.errors.inc({ code: herr.code })
    if ((herr.code === 'HERALD_ERR_RATE_LIMITED' || herr.code === 'HERALD_ERR_BUS_UNAVAILABLE' || herr.code === 'HERALD_ERR_DRAINING') && !reply.hasHeader('retry-after')) reply.header('retry-after', '1')
    return reply.code(herr.statusCode).send(errorBody(herr))
  })
  fastify.setNotFoundHandler((request, reply) => {
    const herr = new Errors.NOT_FOUND(request.method, request.url.split('?')[0])
    ctx.metrics.errors.inc({ code: herr.code })
    return reply.code(404).send(errorBody(herr))
  })

  await fastify.register(healthRoutes)
  await fastify.register(openapiRoutes)
  await fastify.register(async (limited) => {
    // Per token subject (or IP before authentication), after the auth hook has identified the caller.
    await limited.register(fastifyRateLimit, {
      hook: 'preHandler',
      max: config.limits.restMax,
      timeWindow: config.limits.restWindowSeconds * 1000,
      keyGenerator: (request) => request.principal?.sub !== undefined ? 'sub:' + request.principal.sub : 'ip:' + request.ip,
      // With Redis, counts are shared by every node: synced every RATE_LIMIT_SYNC_MS, or (0) one round trip per request.
      ...(rateLimitRedis === undefined ? {} : config.limits.restSyncMs === 0 ? { redis: rateLimitRedis } : { store: syncedStore(limited, rateLimitRedis, config) }),
      nameSpace: config.redisPrefix + ':rl:',
      skipOnError: true,
      errorResponseBuilder: (_request, context) => new Errors.RATE_LIMITED(context.after)
    })
    await limited.register(channelRoutes, { prefix: '/v1' })
    await limited.register(pollRoutes, { prefix: '/v1' })
  })
  await fastify.register(wsRoutes, { prefix: '/v1' })
  await fastify.register(sseRoutes, { prefix: '/v1' })
  await fastify.register(staticRoutes)
}

function syncedStore (fastify: FastifyInstance, redis: Redis, config: HeraldConfig): FastifyRateLimitStoreCtor {
  const { Store, close } = syncedRedisStore(redis, config.redisPrefix + ':rl:', config.limits.restSyncMs)
  fastify.addHook('onClose', async () => { close() })
  return Store
}

/** Maps Fastify's own errors (parsing, validation, limits) to Herald's codes. */
export function toHeraldError (err: FastifyError, config: HeraldConfig): HeraldError {
  if (isHeraldError(err)) return err
  if (err.validation !== undefined) {
    const badChannel = err.validation.find((v) => v.keyword === 'pattern' && /channel/.test(v.instancePath + ' ' + String(v.params?.missingProperty ?? '')))
    if (badChannel !== undefined) return new Errors.BAD_CHANNEL('does not match ' + String(badChannel.params?.pattern ?? 'the channel pattern'))
    return new Errors.VALIDATION(err.message)
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new Errors.BODY_TOO_LARGE(config.maxBodyBytes)
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new Errors.UNSUPPORTED_MEDIA_TYPE(err.message)
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return new Errors.MALFORMED_JSON()
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return new Errors.MALFORMED_JSON()
  }
  if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') return new Errors.MALFORMED_JSON()
  if (err.statusCode === 429) return new Errors.RATE_LIMITED(err.message)
  if (err.statusCode === 405) return new Errors.METHOD_NOT_ALLOWED()
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return new Errors.VALIDATION(err.message)
  return new Errors.INTERNAL()
}

const herald = fp(heraldPlugin, { name: 'herald', fastify: '5.x' })

export default herald

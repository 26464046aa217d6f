import type { FastifyInstance, FastifyError } from 'fastify'
import fp from 'fastify-plugin'
import fastifyAutoload from '@fastify/autoload'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { type DeepPartial, type HeraldConfig, defaultConfig } from './config.js'
import type { Broker } from './bus/broker.js'
import type { Hub } from './hub/hub.js'
import type { Metrics } from './metrics.js'
import type { NamespaceOptions, Namespaces } from './namespaces.js'
import type { PresenceStore } from './presence/presence.js'
import type { PresenceTracker } from './presence/tracker.js'
import type { SessionRegistry } from './session/registry.js'
import { Errors, errorBody, isTemporary, toHeraldError } from './errors.js'
import { MAX_JSON_DEPTH, nestedDeeperThan } from './protocol/json.js'
import { serializeRequest } from './logging.js'
import configPlugin, { type HeraldWorker } from './plugins/config.js'
import metricsPlugin from './plugins/metrics.js'
import busPlugin from './plugins/bus.js'
import namespacesPlugin from './plugins/namespaces.js'
import presencePlugin from './plugins/presence.js'
import hubPlugin from './plugins/hub.js'
import authPlugin from './plugins/auth.js'
import proxyPlugin from './plugins/proxy.js'
import revocationsPlugin from './plugins/revocations.js'
import controlPlugin from './plugins/control.js'
import webhooksPlugin from './plugins/webhooks.js'
import sessionsPlugin from './plugins/sessions.js'
import externalPlugins from './plugins/external.js'

/** What a host application sees of Herald (`app.herald`). */
export interface HeraldHandle {
  readonly nodeId: string
  readonly config: HeraldConfig
  readonly broker: Broker
  readonly hub: Hub
  readonly connections: SessionRegistry
  readonly metrics: Metrics
  readonly log: Logger
  readonly namespaces: Namespaces
  /** Present when some namespace enables presence. */
  readonly presence?: PresenceTracker
  /** The options of a channel's namespace; throws HERALD_ERR_UNKNOWN_NAMESPACE when its namespace is refused. */
  channelOptions: (channel: string) => NamespaceOptions
  /** True once shutdown began: readyz fails, new connections are refused, existing ones are ended. */
  readonly draining: boolean
  /** Starts a graceful drain: readyz fails, new connections are refused, open ones are told to reconnect elsewhere. */
  drain: () => void
}

declare module 'fastify' {
  interface FastifyInstance {
    herald: HeraldHandle
  }
}

export interface HeraldOptions {
  /** Settings; anything left out, at any depth, takes the documented default (the environment is not read). */
  config?: DeepPartial<HeraldConfig>
  /** Use this bus instead of building one from the config; the caller then owns closing it. */
  broker?: Broker
  /** Use this presence store instead of building one; the caller then owns closing it. */
  presence?: PresenceStore
  /** Identity of this node in connection ids and logs (random by default). */
  nodeId?: string
  /** Set by the standalone server in each of its WORKERS: /readyz names the worker, /metrics covers them all. */
  worker?: HeraldWorker
  /** Collect process metrics (default true; turn off when several instances share a process). */
  defaultMetrics?: boolean
  /** Mount every Herald route under this path (e.g. `/realtime`). */
  prefix?: string
}

// Route files are TypeScript when Herald itself runs as TypeScript (tsx), JavaScript once built.
const SOURCE = import.meta.url.endsWith('.ts')
if (SOURCE) process.env.FASTIFY_AUTOLOAD_TYPESCRIPT ??= '1'

/**
 * Herald as a Fastify plugin. The standalone server registers it at the root; another application may
 * `register(herald, { prefix: '/realtime', config: {...} })` next to its own routes. It decorates the host with
 * `herald` (HeraldHandle); its services (plugins/*), routes (routes/, autoloaded), error handlers and third-party
 * plugins stay encapsulated in a child scope under the prefix.
 */
async function heraldPlugin (host: FastifyInstance, opts: HeraldOptions): Promise<void> {
  const config = defaultConfig(opts.config)
  let scope: FastifyInstance | undefined
  const service = (): FastifyInstance => { if (scope === undefined) throw new Error('Herald is not ready yet'); return scope }
  host.decorate('herald', {
    nodeId: opts.nodeId ?? randomBytes(3).toString('hex'),
    config,
    get broker () { return service().heraldBus },
    get hub () { return service().heraldHub },
    get connections () { return service().heraldSessions.registry },
    get metrics () { return service().heraldMetrics },
    get log () { return service().log as unknown as Logger },
    get namespaces () { return service().heraldNamespaces },
    get presence () { return service().heraldPresence.tracker },
    channelOptions: (channel: string) => service().heraldNamespaces.require(channel),
    get draining () { return scope?.heraldSessions.draining ?? false },
    drain: () => { scope?.heraldSessions.drain() }
  })
  // Drain before @fastify/websocket's own preClose closes every socket without a code (1005): clients get 1012.
  host.addHook('preClose', (done) => { host.herald.drain(); done() })

  await host.register(async (child) => {
    scope = child
    await child.register(configPlugin, { config, nodeId: host.herald.nodeId, worker: opts.worker })
    await child.register(metricsPlugin, { defaultMetrics: opts.defaultMetrics })
    await child.register(proxyPlugin)
    await child.register(busPlugin, { broker: opts.broker })
    await child.register(namespacesPlugin)
    await child.register(presencePlugin, { store: opts.presence })
    await child.register(hubPlugin)
    await child.register(revocationsPlugin)
    await child.register(authPlugin)
    await child.register(sessionsPlugin)
    await child.register(controlPlugin)
    await child.register(webhooksPlugin)
    await child.register(externalPlugins)
    handleErrors(child)
    await child.register(fastifyAutoload, {
      dir: fileURLToPath(new URL('../routes', import.meta.url)),
      dirNameRoutePrefix: true,
      autoHooks: true,
      cascadeHooks: true,
      scriptPattern: SOURCE ? /(?<!\.d)\.ts$/ : /\.js$/
    })
    // Fastify's types want serializers to return strings; pino's (what Fastify uses) return objects.
  }, { prefix: opts.prefix ?? '', logSerializers: { req: serializeRequest } as unknown as Record<string, (value: unknown) => string> })
}

/** One error handler and one 404 handler for every Herald route; JSON bodies are depth-checked before parsing. */
function handleErrors (fastify: FastifyInstance): void {
  const { heraldConfig: config, heraldMetrics: metrics } = fastify
  // Fastify's own JSON parser (prototype keys refused), behind a depth check: see protocol/json.ts.
  const parseJson = fastify.getDefaultJsonParser('error', 'error')
  fastify.removeContentTypeParser('application/json')
  fastify.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (nestedDeeperThan(body as string)) { done(new Errors.VALIDATION(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`), undefined); return }
    parseJson(request, body as string, done)
  })
  fastify.setErrorHandler((err: FastifyError, request, reply) => {
    const herr = toHeraldError(err, config.maxBodyBytes)
    if (herr.statusCode >= 500 && herr.code === 'HERALD_ERR_INTERNAL') request.log.error({ err }, 'request failed')
    metrics.errors.inc({ code: herr.code })
    if (herr.statusCode === 429) metrics.events.record('refused', `${request.method} ${request.url.split('?')[0]} from ${request.ip}: ${herr.message}`, herr.code)
    if (isTemporary(herr) && !reply.hasHeader('retry-after')) reply.header('retry-after', '1')
    return reply.code(herr.statusCode).send(errorBody(herr))
  })
  fastify.setNotFoundHandler((request, reply) => {
    const herr = new Errors.NOT_FOUND(request.method, request.url.split('?')[0])
    metrics.errors.inc({ code: herr.code })
    return reply.code(404).send(errorBody(herr))
  })
}

const herald = fp(heraldPlugin, { name: 'herald', fastify: '5.x' })

export default herald

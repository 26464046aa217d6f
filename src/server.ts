import cluster from 'node:cluster'
import Fastify, { type FastifyInstance } from 'fastify'
import closeWithGrace from 'close-with-grace'
import { pino } from 'pino'
import { createSigner } from 'fast-jwt'
import { ConfigError, configFromEnv, loadEnv, trustProxyOption, type Env } from './config.js'
import { devSecret, DEV_SECRET_FILE } from './dev-secret.js'
import herald from './app.js'
import { heraldServerOptions } from './server-options.js'
import { REDACT, serializeRequest } from './logging.js'
import { onWorkerStop, runPrimary, workerContext, workerCount } from './workers.js'

function loadOrExit (): Env {
  try {
    return loadEnv()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.message + '\n')
      process.exit(78) // EX_CONFIG
    }
    throw err
  }
}

function configOrExit (env: Env): ReturnType<typeof configFromEnv> {
  try {
    return configFromEnv(env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.message + '\n')
      process.exit(78)
    }
    throw err
  }
}

/**
 * WORKERS > 1, in the primary: check the settings once, make the development secret once (every worker reads the
 * same one), then supervise the workers until a signal has drained them all.
 */
async function primary (env: Env, count: number): Promise<void> {
  if (env.REDIS_URL === undefined && env.REDIS_CLUSTER === undefined) {
    process.stderr.write(`WORKERS=${env.WORKERS} needs a shared bus: set REDIS_URL or REDIS_CLUSTER. The in-process bus lives in one process, so ${count} workers would be ${count} separate buses whose clients never see each other's events.\n`)
    process.exit(78)
  }
  const config = configOrExit(env)
  if (config.jwt.secret === undefined && config.jwt.publicKey === undefined) devSecret(true)
  const log = pino({ level: env.LOG_LEVEL })
  process.exit(await runPrimary({ count, drainTimeoutSeconds: config.drainTimeoutSeconds, log }))
}

/** Entry point of the standalone server: config from the environment, listen, drain on SIGTERM/SIGINT. */
async function main (): Promise<void> {
  const env = loadOrExit()
  const workers = workerCount(env.WORKERS)
  if (workers > 1 && cluster.isPrimary) { await primary(env, workers); return }
  const worker = workerContext()
  // A worker listens for its stop at once: a drain asked for while it is still starting ends it before it serves.
  let serving: FastifyInstance | undefined
  let stopping = false
  if (worker !== undefined) {
    onWorkerStop((why) => {
      if (stopping) return
      stopping = true
      if (serving === undefined) process.exit(0)
      drainWorker(serving, why)
    })
  }
  const config = configOrExit(env)
  let devMode = false
  if (config.jwt.secret === undefined && config.jwt.publicKey === undefined) {
    config.jwt.secret = devSecret(true)
    // Only a secret Herald made itself may sign tokens for anyone who asks (the demo's /dev/token).
    config.devToken = !config.production
    devMode = true
  }
  const app = Fastify({
    logger: {
      level: env.LOG_LEVEL,
      redact: { paths: REDACT, censor: '[redacted]' },
      serializers: {
        // The default request serializer logs the URL, query string (and so ?token=) included.
        req: serializeRequest
      }
    },
    ...heraldServerOptions(config),
    trustProxy: trustProxyOption(env.TRUST_PROXY),
    return503OnClosing: true,
    forceCloseConnections: 'idle'
  })
  await app.register(herald, { config, nodeId: worker?.nodeId, worker })
  await app.ready()
  worker?.share(app.herald.metrics.registry)

  const delay = config.drainTimeoutSeconds * 1000 + 1000
  if (worker === undefined) {
    closeWithGrace({ delay, logger: app.log }, async ({ signal, err }) => {
      if (err !== undefined) app.log.error({ err }, 'fatal error; shutting down')
      app.log.info({ signal }, 'draining')
      app.herald.drain()
      await app.close()
    })
  } else {
    // One that fails is restarted by the primary.
    process.on('uncaughtException', (err) => { app.log.fatal({ err }, 'uncaught exception; the primary restarts this worker'); process.exit(1) })
    process.on('unhandledRejection', (err) => { app.log.fatal({ err }, 'unhandled rejection; the primary restarts this worker'); process.exit(1) })
  }

  await app.listen({ port: env.PORT, host: env.HOST })
  serving = app
  if (devMode && (worker === undefined || worker.index === 1)) {
    const token = createSigner({ key: config.jwt.secret!, expiresIn: 24 * 3600 * 1000 })({ sub: 'dev', subscribe: ['*'], publish: ['*'] })
    const addr = `http://${env.HOST === '0.0.0.0' ? '127.0.0.1' : env.HOST}:${(app.server.address() as { port: number }).port}`
    process.stdout.write([
      '',
      `Herald is running in development mode on ${addr} (bus: ${app.herald.broker.kind}${worker === undefined ? '' : `, ${workers} workers`}).`,
      `No JWT_SECRET was set: a random secret is kept in ${DEV_SECRET_FILE}.`,
      'A token for everything (24 h):',
      `  TOKEN=${token}`,
      'Mint others with:  npm run token -- --sub alice --subscribe \'chat:*\' --publish \'chat:*\'',
      `Try:  curl -N "${addr}/v1/sse?channel=chat:lobby&token=$TOKEN"`,
      `      curl -X POST -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"data":{"text":"hi"}}' ${addr}/v1/channels/chat:lobby/events`,
      ''
    ].join('\n') + '\n')
  }
}

/** A worker drains when its primary (or a signal) says so, once; DRAIN_TIMEOUT + 1 s later it exits regardless. */
function drainWorker (app: FastifyInstance, why: string): void {
  app.log.info({ why }, 'draining')
  setTimeout(() => { app.log.error('drain timed out'); process.exit(1) }, app.herald.config.drainTimeoutSeconds * 1000 + 1000).unref()
  app.herald.drain()
  app.close().then(() => process.exit(0), (err: unknown) => { app.log.error({ err }, 'close failed'); process.exit(1) })
}

main().catch((err) => {
  process.stderr.write(String((err as Error).stack ?? err) + '\n')
  process.exit(1)
})

import Fastify from 'fastify'
import closeWithGrace from 'close-with-grace'
import { createSigner } from 'fast-jwt'
import { ConfigError, configFromEnv, loadEnv, type Env } from './config.js'
import { devSecret, DEV_SECRET_FILE } from './dev-secret.js'
import herald from './app.js'
import { heraldServerOptions } from './server-options.js'
import { REDACT, serializeRequest } from './logging.js'

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

/** Entry point of the standalone server: config from the environment, listen, drain on SIGTERM/SIGINT. */
async function main (): Promise<void> {
  const env = loadOrExit()
  const config = configFromEnv(env)
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
    return503OnClosing: true,
    forceCloseConnections: 'idle'
  })
  await app.register(herald, { config })

  closeWithGrace({ delay: config.drainTimeoutSeconds * 1000 + 1000, logger: app.log }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'fatal error; shutting down')
    app.log.info({ signal }, 'draining')
    app.herald.drain()
    await app.close()
  })

  await app.listen({ port: env.PORT, host: env.HOST })
  if (devMode) {
    const token = createSigner({ key: config.jwt.secret!, expiresIn: 24 * 3600 * 1000 })({ sub: 'dev', subscribe: ['*'], publish: ['*'] })
    const addr = `http://${env.HOST === '0.0.0.0' ? '127.0.0.1' : env.HOST}:${(app.server.address() as { port: number }).port}`
    process.stdout.write([
      '',
      `Herald is running in development mode on ${addr} (bus: ${app.herald.broker.kind}).`,
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

main().catch((err) => {
  process.stderr.write(String((err as Error).stack ?? err) + '\n')
  process.exit(1)
})

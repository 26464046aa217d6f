import fp from 'fastify-plugin'
import fastifyCors from '@fastify/cors'
import fastifySwagger from '@fastify/swagger'
import fastifyWebsocket from '@fastify/websocket'
import { version } from '../version.js'

/** The third-party plugins Herald's routes rely on, configured from its settings. */
export default fp(async function externalPlugins (fastify) {
  const config = fastify.heraldConfig
  await fastify.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Herald', version, description: 'Real-time event gateway. WebSocket and SSE frames: docs/protocol.md; error codes: docs/errors.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' }, apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'A key of API_KEYS (server API; docs/server-api.md)' } } }
    }
  })
  // An OPTIONS request that is no preflight gets the same empty answer rather than a text/plain 400.
  await fastify.register(fastifyCors, { origin: config.corsOrigins === '*' ? '*' : config.corsOrigins, exposedHeaders: ['Retry-After'], strictPreflight: false })
  // A host application may have registered it already (one upgrade handler per server).
  if (!fastify.hasDecorator('websocketServer')) {
    await fastify.register(fastifyWebsocket, {
      options: {
        maxPayload: Math.max(config.maxFrameBytes * 4, 1024 * 1024),
        // Herald's registry tracks and drains its sockets (with a close code); ws's own Set would be a second entry per connection.
        clientTracking: false,
        perMessageDeflate: config.ws.compression ? { threshold: config.ws.compressionThreshold } : false
      }
    })
  }
}, { name: 'herald-external', dependencies: ['herald-config'] })

import Fastify from 'fastify'
import herald from './app.js'

/** The OpenAPI document as checked in under openapi/: generated from the route schemas of a throw-away instance. */
export async function generateOpenApi (): Promise<string> {
  const app = Fastify({ logger: false })
  await app.register(herald, { config: { jwt: { secret: 'openapi-generation-only', algorithms: ['HS256'] } }, nodeId: 'openapi', defaultMetrics: false })
  await app.ready()
  const res = await app.inject('/openapi.json')
  await app.close()
  return JSON.stringify(res.json(), null, 2) + '\n'
}

import type { FastifyPluginAsync } from 'fastify'

const openapiRoutes: FastifyPluginAsync = async (fastify) => {
  fastify.get('/openapi.json', { schema: { hide: true } }, async () => fastify.swagger())
}

export default openapiRoutes

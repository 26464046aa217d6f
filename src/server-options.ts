import type { FastifyError, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify'
import type { ServerOptions } from 'node:http'
import type { HeraldConfig } from './config.js'
import { Errors, errorBody } from './errors.js'
import { heraldChildLogger } from './logging.js'

/**
 * Fastify refuses a URL it cannot decode (`%` not followed by two hex digits) before any route or plugin sees it;
 * this answers it like every other Herald error: 400 with a code.
 */
export function heraldFrameworkErrors (_error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  void reply.code(400).send(errorBody(new Errors.VALIDATION('the URL is not validly percent-encoded')))
}

/**
 * The server options Herald needs from the Fastify instance it runs in — the standalone server uses them, and a
 * host that registers Herald as a plugin should spread them into its own `Fastify({ ... })`:
 *  - channel names of 128 characters (up to 3× that percent-encoded) in a path (Fastify's default is 100);
 *  - request heads of up to 64 KiB: an SSE or long-poll request may name `MAX_SUBSCRIPTIONS` channels of 128
 *    characters and carry a cursor for all of them (Node's default is 16 KiB);
 *  - a request's head and body must arrive within REQUEST_TIMEOUT (a slowloris holds a connection by sending them
 *    a byte at a time; Fastify's default is no limit), checked every second;
 *  - malformed URLs answered with a Herald error code;
 *  - a request's child logger made only when the request logs, while request logging is off (logging.ts).
 */
export function heraldServerOptions (config: HeraldConfig): FastifyServerOptions & { http: ServerOptions } {
  return {
    bodyLimit: config.maxBodyBytes,
    routerOptions: { maxParamLength: 512 },
    http: { maxHeaderSize: 64 * 1024, connectionsCheckingInterval: 1000 },
    requestTimeout: config.requestTimeoutSeconds * 1000,
    frameworkErrors: heraldFrameworkErrors,
    childLoggerFactory: heraldChildLogger as unknown as FastifyServerOptions['childLoggerFactory']
  }
}

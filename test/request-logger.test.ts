import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import Fastify, { type FastifyBaseLogger } from 'fastify'
import { pino } from 'pino'
import { heraldServerOptions } from '../src/server-options.js'
import { defaultConfig } from '../src/config.js'
import { serializeRequest } from '../src/logging.js'

// The request logger is made only when a request logs while request logging is off; what it logs is unchanged:
// the request id is bound, the route's serializers apply, and the level still filters.

async function appAt (level: string): Promise<{ url: string, lines: Array<Record<string, unknown>>, children: () => number, close: () => Promise<void> }> {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>); cb() } })
  const logger = pino({ level }, stream)
  let made = 0
  // pino's children inherit from their parent: the counter must call the original on `this`, whichever it is.
  const child = logger.child
  logger.child = function (this: typeof logger, ...args: Parameters<typeof child>) { made++; return child.apply(this, args) } as typeof logger.child
  const app = Fastify({ ...heraldServerOptions(defaultConfig()), loggerInstance: logger as unknown as FastifyBaseLogger })
  await app.register(async (scope) => {
    scope.get('/quiet', async () => ({ ok: true }))
    scope.get('/warns', async (request) => { request.log.warn({ req: request}, 'something odd'); request.log.debug('not shown at warn'); return { ok: true } })
    scope.get('/louder', async (request) => { request.log.level = 'debug'; request.log.debug({ seen: request.log.level }, 'now shown'); return { ok: true } })
    scope.get('/nested', async (request) => { request.log.child({ part: 'inner' }).error('inner failure'); return { ok: true } })
  }, { logSerializers: { req: serializeRequest } as unknown as Record<string, (value: unknown) => string> })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const atStart = made // Fastify's own, for the plugin scope
  return { url, lines, children: () => made - atStart, close: async () => { await app.close() } }
}

test('LOG_LEVEL warn: a request that logs nothing makes no child logger; one that logs gets its request id and serializers', async (t) => {
  const app = await appAt('warn')
  t.after(app.close)
  for (let i = 0; i < 20; i++) assert.equal((await fetch(app.url + '/quiet')).status, 200)
  assert.equal(app.children(), 0, 'no child logger for requests that log nothing')
  assert.equal(app.lines.length, 0, 'nothing logged')

  assert.equal((await fetch(app.url + '/warns?token=abc')).status, 200)
  assert.equal(app.children(), 1)
  assert.equal(app.lines.length, 1, 'only the warning: debug stays filtered and request logging is off')
  const [line] = app.lines
  
  assert.equal(line.msg, 'something odd')
  assert.equal(line.level, 40)
  assert.equal(typeof line.reqId, 'string')
  assert.deepEqual(line.req, { method: 'GET', url: '/warns?token=[redacted]', remoteAddress: '127.0.0.1' }, 'the route serializer applies')

  assert.equal((await fetch(app.url + '/nested')).status, 200)
  const nested = app.lines[1]
  assert.equal(nested.msg, 'inner failure')
  assert.equal(nested.part, 'inner')
  assert.equal(typeof nested.reqId, 'string')
  assert.notEqual(nested.reqId, line.reqId)

  // A request that raises its own logger's level gets a real child at that level; the server's stays at warn.
  assert.equal((await fetch(app.url + '/louder')).status, 200)
  const louder = app.lines[2]
  assert.equal(louder.msg, 'now shown')
  assert.equal(louder.seen, 'debug')
  assert.equal(louder.level, 20)
  assert.equal(typeof louder.reqId, 'string')
  // ...and that request's own completion is logged at info (Fastify's per-request level), others' are not.
  assert.ok(app.lines.slice(3).every((l) => l.reqId === louder.reqId), JSON.stringify(app.lines.slice(3)))
  const before = app.lines.length
  for (let i = 0; i < 3; i++) assert.equal((await fetch(app.url + '/quiet')).status, 200)
  assert.equal(app.lines.length, before, 'the other requests stay quiet')
})

test('LOG_LEVEL info: request logging as before, every line with its request id', async (t) => {
  const app = await appAt('info')
  t.after(app.close)
  assert.equal((await fetch(app.url + '/quiet')).status, 200)
  const incoming = app.lines.find((l) => l.msg === 'incoming request')
  const completed = app.lines.find((l) => l.msg === 'request completed')
  assert.ok(incoming !== undefined && completed !== undefined, JSON.stringify(app.lines))
  assert.equal(typeof incoming.reqId, 'string')
  assert.equal(incoming.reqId, completed.reqId)
  assert.ok(app.children() >= 1)
})

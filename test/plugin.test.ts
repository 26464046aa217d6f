import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import Fastify, { type FastifyInstance } from 'fastify'
import herald from '../src/app.js'
import { MemoryBroker } from '../src/bus/index.js'
import { SECRET, token, publish, WsClient, SseClient, poll } from './helper.js'

/**
 * Herald inside someone else's Fastify application: registered with options (never the environment) under a
 * prefix, next to the host's own routes, error handling and 404s.
 */

interface Host { app: FastifyInstance, origin: string, base: string, wsBase: string }

async function hostWithHerald (t: TestContext, opts: { broker?: MemoryBroker } = {}): Promise<Host> {
  const app = Fastify({ logger: false, forceCloseConnections: true })
  app.get('/hello', async () => ({ hello: 'world' }))
  app.get('/boom', async () => { throw Object.assign(new Error('host failure'), { statusCode: 418 }) })
  await app.register(herald, {
    prefix: '/realtime',
    defaultMetrics: false,
    nodeId: 'host-node',
    broker: opts.broker,
    config: { jwt: { secret: SECRET, algorithms: ['HS256'] }, history: { size: 50, ttlSeconds: 600, metaTtlSeconds: 0, limitMax: 500 } }
  })
  app.get('/after', async () => 'registered after Herald')
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.after(async () => { await app.close() })
  const { port } = app.server.address() as { port: number }
  const origin = `http://127.0.0.1:${port}`
  return { app, origin, base: `${origin}/realtime`, wsBase: `ws://127.0.0.1:${port}/realtime` }
}

test('the host application keeps its own routes next to Herald under /realtime', async (t) => {
  const { app, origin } = await hostWithHerald(t)
  const hello = await fetch(`${origin}/hello`)
  assert.equal(hello.status, 200)
  assert.deepEqual(await hello.json(), { hello: 'world' })
  assert.equal(await (await fetch(`${origin}/after`)).text(), 'registered after Herald')
  // Herald did not put its auth on the host's routes, nor its CORS headers.
  assert.equal(hello.headers.get('access-control-allow-origin'), null)

  // app.herald is the context, decorated on the host instance.
  assert.equal(app.hasDecorator('herald'), true)
  assert.equal(app.herald.broker.kind, 'memory')
  assert.equal(app.herald.nodeId, 'host-node')
  assert.equal(typeof app.herald.drain, 'function')
  // Options, not defaults or the environment.
  assert.equal(app.herald.config.history.limitMax, 500)
  assert.equal(app.herald.config.jwt.secret, SECRET)
})

test('Herald works under the prefix: health, publish, WebSocket, SSE, long-poll, history', async (t) => {
  const { base, wsBase, app } = await hostWithHerald(t)
  const health = await fetch(`${base}/healthz`)
  assert.equal(health.status, 200)
  assert.deepEqual(await health.json(), { status: 'ok', bus: 'memory', node: 'host-node', pid: process.pid })
  assert.equal((await fetch(`${base}/readyz`)).status, 200)
  assert.match(await (await fetch(`${base}/metrics`)).text(), /herald_connections/)
  const spec = await (await fetch(`${base}/openapi.json`)).json() as { paths: Record<string, unknown> }
  assert.ok(Object.keys(spec.paths).some((p) => p.startsWith('/realtime/v1/channels')), 'the spec documents the prefixed paths')
  assert.equal(Object.keys(spec.paths).includes('/hello'), false, 'the spec documents only Herald')

  const ws = await WsClient.connect(wsBase)
  t.after(() => ws.close())
  await ws.subscribe('room:1')
  const sse = await SseClient.open(base, ['room:1'])
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')
  const first = await poll(base, ['room:1'], { timeout: 0 })
  assert.equal(first.status, 200)

  const res = await publish(base, 'room:1', { via: 'plugin' })
  assert.equal(res.status, 201)
  assert.deepEqual([res.body.channel, res.body.offset, res.body.duplicate], ['room:1', 1, false])
  assert.deepEqual((await ws.events('room:1', 1))[0].data, { via: 'plugin' })
  assert.deepEqual((await sse.waitEvents('room:1', 1))[0].data, { via: 'plugin' })
  const polled = await poll(base, ['room:1'], { cursor: first.body.cursor, timeout: 2 })
  assert.deepEqual(polled.body.events.map((e: { data: unknown }) => e.data), [{ via: 'plugin' }])
  const history = await fetch(`${base}/v1/channels/room:1/events`, { headers: { authorization: `Bearer ${token()}` } })
  assert.equal(history.status, 200)
  assert.equal((await history.json() as { events: unknown[] }).events.length, 1)
  assert.equal(app.herald.connections.count('websocket'), 1)
  assert.equal(app.herald.connections.count('sse'), 1)

  // Herald's errors and limits apply under the prefix: its error body, its history limit from the options.
  await assert.rejects(WsClient.connect(wsBase, { token: null }), (err: { status?: number, body?: { code: string } }) => {
    assert.equal(err.status, 401)
    assert.equal(err.body?.code, 'HERALD_ERR_UNAUTHORIZED')
    return true
  })
  const unauth = await fetch(`${base}/v1/channels/room:1/events`)
  assert.equal(unauth.status, 401)
  assert.equal((await unauth.json() as { code: string }).code, 'HERALD_ERR_UNAUTHORIZED')
  const overLimit = await fetch(`${base}/v1/channels/room:1/events?limit=501`, { headers: { authorization: `Bearer ${token()}` } })
  assert.equal(overLimit.status, 400)
  assert.equal((await overLimit.json() as { code: string }).code, 'HERALD_ERR_VALIDATION')
  // Herald is mounted only under the prefix.
  assert.equal((await fetch(`${origin(base)}/healthz`)).status, 404)
  const rootPublish = await publish(origin(base), 'room:1', 'lost')
  assert.equal(rootPublish.status, 404)
})

test('404s: Herald\'s handler answers under the prefix only; the host keeps its own elsewhere', async (t) => {
  const { base, origin: host } = await hostWithHerald(t)
  const inside = await fetch(`${base}/nope`)
  assert.equal(inside.status, 404)
  const insideBody = await inside.json() as { code: string, message: string }
  assert.equal(insideBody.code, 'HERALD_ERR_NOT_FOUND')
  assert.match(insideBody.message, /\/realtime\/nope/)

  for (const path of ['/nope', '/v1/channels/room/events', '/realtimex']) {
    const outside = await fetch(`${host}${path}`)
    assert.equal(outside.status, 404, path)
    const body = await outside.json() as { code?: string, message: string }
    // Fastify's own 404, not Herald's.
    assert.notEqual(body.code, 'HERALD_ERR_NOT_FOUND', `${path} is answered by the host, not Herald`)
    assert.match(body.message, /not found/i)
  }
  // The host's error handling is the host's too.
  const boom = await fetch(`${host}/boom`)
  assert.equal(boom.status, 418)
  const boomBody = await boom.json() as { code?: string, message: string }
  assert.equal(boomBody.message, 'host failure')
  assert.equal(boomBody.code, undefined)
})

test('an injected broker is used, and the host keeps ownership of it', async (t) => {
  const broker = new MemoryBroker({ history: { size: 10, ttlSeconds: 600, metaTtlSeconds: 0 }, idempotencyTtlSeconds: 60 })
  await broker.connect()
  t.after(async () => { await broker.close() })
  const host = await hostWithHerald(t, { broker })
  assert.equal(host.app.herald.broker, broker)

  // A publish through Herald lands in this broker...
  const res = await publish(host.base, 'inj', { n: 1 })
  assert.equal(res.status, 201)
  const seen = await broker.history('inj', { since: 0, limit: 10 })
  assert.equal(seen.top.offset, 1)
  assert.equal(JSON.parse(seen.publications[0].frame).data.n, 1)
  // ...and one made directly on the broker reaches Herald's subscribers.
  const ws = await WsClient.connect(host.wsBase)
  await ws.subscribe('inj')
  await broker.publish({ channel: 'inj', data: { n: 2 } })
  assert.deepEqual((await ws.events('inj', 1))[0].data, { n: 2 })
  ws.close()

  // Closing the host application does not close a broker it did not create.
  await host.app.close()
  assert.equal(broker.ready(), true)
  const after = await broker.publish({ channel: 'inj', data: { n: 3 } })
  assert.equal(after.offset, 3)
})

function origin (base: string): string { return base.replace(/\/realtime$/, '') }

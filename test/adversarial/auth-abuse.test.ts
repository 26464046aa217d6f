import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { Writable } from 'node:stream'
import { createSigner } from 'fast-jwt'
import Fastify from 'fastify'
import WebSocket from 'ws'
import herald from '../../src/app.js'
import { expiryTimer, MAX_TIMER_MS } from '../../src/session/session.js'
import { publish, SECRET, SseClient, startHerald, token, until, WsClient } from '../helper.js'

// Tokens that should not work, tokens that leak, and clients that hammer: each tried against a real server.

const sign = (claims: Record<string, unknown>, expiresIn?: number): string =>
  createSigner({ key: SECRET, ...(expiresIn === undefined ? {} : { expiresIn }) })({ sub: 'tester', subscribe: ['*'], publish: ['*'], ...claims })

/** A GET from a given loopback source address (a second client IP on this machine). */
async function getFrom (localAddress: string, url: string, headers: Record<string, string> = {}): Promise<{ status: number, code?: string }> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url, { localAddress, headers }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode!, code: body.startsWith('{') ? (JSON.parse(body) as { code?: string }).code : undefined }))
    })
    req.on('error', reject)
    req.end()
  })
}

test('a token without exp is refused when JWT_REQUIRE_EXP is on (the production default); aud and iss are checked when set', async (t) => {
  const noExp = sign({})
  const dev = await startHerald(t)
  assert.equal((await publish(dev.url, 'room', 1, { token: noExp })).status, 201, 'development default: accepted')
  const prod = await startHerald(t, { config: { production: true } })
  const refused = await publish(prod.url, 'room', 1, { token: noExp })
  assert.equal(refused.status, 401)
  assert.equal(refused.body.code, 'HERALD_ERR_UNAUTHORIZED')
  assert.match(refused.body.message, /exp/)
  await assert.rejects(WsClient.connect(prod.wsUrl, { token: noExp }), (err: { status?: number }) => err.status === 401)
  assert.equal((await publish(prod.url, 'room', 1, { token: sign({}, 60_000) })).status, 201, 'with exp: accepted')

  const scoped = await startHerald(t, { config: { jwt: { secret: SECRET, algorithms: ['HS256'], audience: ['herald'], issuer: ['https://auth.example'] } } })
  const good = sign({ aud: 'herald', iss: 'https://auth.example' }, 60_000)
  assert.equal((await publish(scoped.url, 'room', 1, { token: good })).status, 201)
  for (const claims of [{ aud: 'billing', iss: 'https://auth.example' }, { aud: 'herald', iss: 'https://evil.example' }, {}]) {
    const res = await publish(scoped.url, 'room', 1, { token: sign(claims, 60_000) })
    assert.equal(res.status, 401, JSON.stringify(claims))
  }
})

test('any exp is reached: a token valid for months still ends its connection (in steps of the longest timer)', () => {
  const now = Date.UTC(2026, 10, 30)
  assert.deepEqual(expiryTimer(now / 1000 + 5, now), { ms: 5000, expired: true })
  assert.deepEqual(expiryTimer(now / 1000 - 5, now), { ms: 0, expired: true })
  const far = now / 1000 + 90 * 86400
  const first = expiryTimer(far, now)
  assert.deepEqual(first, { ms: MAX_TIMER_MS, expired: false }, 'not a timer that overflows and fires at once, nor none at all')
  const second = expiryTimer(far, now + first.ms)
  const third = expiryTimer(far, now + first.ms + second.ms)
  const fourth = expiryTimer(far, now + first.ms + second.ms + third.ms)
  assert.deepEqual([second.expired, third.expired, fourth.expired], [false, false, true])
  assert.equal(first.ms + second.ms + third.ms + fourth.ms, 90 * 86400 * 1000, 'it fires exactly at exp')
})

test('REST does not read ?token=: a token in the URL of a publish is refused and publishes nothing', async (t) => {
  const { url } = await startHerald(t)
  const res = await fetch(`${url}/v1/channels/leak/events?token=${token()}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"data":1}' })
  assert.equal(res.status, 401)
  const history = await fetch(`${url}/v1/channels/leak/events`, { headers: { authorization: `Bearer ${token()}` } })
  assert.equal((await history.json() as { offset: number }).offset, 0)
})

test('in plugin form, with the host\'s own logger and its default serializers, no token reaches the logs', async (t) => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done() } })
  const app = Fastify({ logger: { level: 'trace', stream: sink } })
  await app.register(herald, { prefix: '/rt', config: { jwt: { secret: SECRET, algorithms: ['HS256'] } }, defaultMetrics: false })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.after(async () => { await app.close() })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/rt`
  const secretish = token({ sub: 'logged' })
  const ws = await WsClient.connect(base.replace('http', 'ws'), { token: secretish, query: true })
  ws.close()
  const sse = await SseClient.open(base, ['room'], { token: secretish })
  sse.close()
  await fetch(`${base}/v1/poll?channel=room&timeout=0&token=${secretish}`)
  await fetch(`${base}/v1/channels/room/events?since=0&token=${secretish}`)
  await fetch(`${base}/v1/channels/room/events?since=0&%74oken=${secretish}`)
  await fetch(`${base}/v1/channels/room/events`, { headers: { authorization: `Bearer ${secretish}` } })
  await until(() => lines.filter((l) => l.includes('incoming request')).length >= 6, 'the requests were logged')
  const leaked = lines.filter((l) => l.includes(secretish.split('.')[2]))
  assert.deepEqual(leaked, [], 'no log line holds the token')
  assert.ok(lines.some((l) => l.includes('token=[redacted]')), 'the URLs are logged, redacted')
})

test('failed authentications count against the client IP: past the budget it is refused before any check, other IPs are not', async (t) => {
  const { url } = await startHerald(t, { config: { limits: { restMax: 20, restWindowSeconds: 60 } } })
  const bad = { authorization: `Bearer ${token({}, { key: 'not-the-secret-0123456789' })}` }
  for (let i = 0; i < 20; i++) assert.equal((await getFrom('127.0.0.1', `${url}/v1/whoami`, bad)).status, 401)
  const flooded = await getFrom('127.0.0.1', `${url}/v1/whoami`, { authorization: `Bearer ${token()}` })
  assert.deepEqual(flooded, { status: 429, code: 'HERALD_ERR_RATE_LIMITED' }, 'even a good token, from the flooding address')
  const other = await getFrom('127.0.0.2', `${url}/v1/whoami`, { authorization: `Bearer ${token()}` })
  assert.equal(other.status, 200, 'another address is not affected')
})

test('connection churn: past CONNECT_BURST, new WebSockets and SSE streams of one IP or one subject are refused 429 before any upgrade', async (t) => {
  const { url, wsUrl } = await startHerald(t, { config: { limits: { connectRate: 0.1, connectBurst: 3 } } })
  const opened: WsClient[] = []
  t.after(() => { for (const c of opened) c.close() })
  for (let i = 0; i < 3; i++) opened.push(await WsClient.connect(wsUrl, { token: token({ sub: 'u' + i }) }))
  await assert.rejects(WsClient.connect(wsUrl, { token: token({ sub: 'u9' }) }), (err: { status?: number, body?: { code?: string } }) =>
    err.status === 429 && err.body?.code === 'HERALD_ERR_RATE_LIMITED', 'the fourth from this IP')
  await assert.rejects(SseClient.open(url, ['room'], { token: token({ sub: 'u8' }) }), (err: { status?: number }) => err.status === 429, 'SSE too')
  // One subject, from another address each time: limited as a subject.
  const bySub = async (from: string): Promise<number> => await new Promise((resolve) => {
    const socket = new WebSocket(`${wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${token({ sub: 'roamer' })}` }, localAddress: from })
    socket.on('open', () => { socket.close(); resolve(101) })
    socket.on('unexpected-response', (_req, res) => resolve(res.statusCode!))
    socket.on('error', () => {})
  })
  assert.deepEqual([await bySub('127.0.0.2'), await bySub('127.0.0.3'), await bySub('127.0.0.4'), await bySub('127.0.0.5')], [101, 101, 101, 429])
})

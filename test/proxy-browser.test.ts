import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import { chromiumSkipReason, sharedBrowser } from './support/chromium.js'
import { publish, startHerald } from './helper.js'

// The connect hook in a real headless Chromium: the browser's own session cookie admits its WebSocket, EventSource
// and long-poll (no token anywhere), and a page of another site — whose requests carry the same cookie, as browsers
// send cookies regardless of port — cannot open a WebSocket in the user's name (cross-site WebSocket hijacking).

declare const window: any

const skip = chromiumSkipReason('the connect-hook browser test')
const browser = sharedBrowser(skip)

test('connect hook in a browser: the session cookie admits WebSocket, EventSource and long-poll on this site, and no other site', { skip }, async (t) => {
  // The application: a session cookie names the user.
  const backend = Fastify({ forceCloseConnections: true })
  const asked: string[] = []
  backend.post('/connect', async (req, reply) => {
    const body = req.body as { transport: string, headers: Record<string, string> }
    asked.push(body.transport)
    const user = /session=([a-z]+)-ok/.exec(body.headers.cookie ?? '')?.[1]
    if (user === undefined) return await reply.code(401).send({ error: { code: 'no_session' } })
    return { sub: user, subscribe: ['room:*'], channels: [`inbox:${user}#${user}`] }
  })
  await backend.listen({ port: 0, host: '127.0.0.1' })
  t.after(async () => { await backend.close() })
  const backendUrl = `http://127.0.0.1:${(backend.server.address() as { port: number }).port}`
  const h = await startHerald(t, { config: { proxy: { connectUrl: backendUrl + '/connect' }, namespaces: { namespaces: { room: {}, inbox: {} } } } })

  // Another site on this machine, serving a page that will try to use the user's cookie against Herald.
  const other = Fastify({ forceCloseConnections: true })
  other.get('/', async (_req, reply) => await reply.type('text/html').send('<!doctype html><title>other site</title>'))
  await other.listen({ port: 0, host: '127.0.0.1' })
  t.after(async () => { await other.close() })
  const otherUrl = `http://127.0.0.1:${(other.server.address() as { port: number }).port}/`

  const context = await browser().newContext()
  t.after(async () => { await context.close() })
  await context.addCookies([{ name: 'session', value: 'alice-ok', domain: '127.0.0.1', path: '/' }])

  // A page of Herald's own site.
  const page = await context.newPage()
  await page.goto(h.url + '/healthz')
  const wsUrl = h.wsUrl + '/v1/ws'
  const ws = await page.evaluate(async (url: string) => await new Promise<{ sub: string, channels: string[], subscribed: string }>((resolve, reject) => {
    const socket = new window.WebSocket(url)
    let hello: any
    socket.onmessage = (m: { data: string }) => {
      const frame = JSON.parse(m.data)
      if (frame.type === 'connected') hello = frame
      if (frame.type === 'subscribed') { resolve({ sub: hello.sub, channels: hello.channels, subscribed: frame.channel }); window.aliceSocket = socket }
    }
    socket.onclose = (e: { code: number }) => reject(new Error('closed ' + String(e.code)))
  }), wsUrl)
  assert.deepEqual(ws, { sub: 'alice', channels: ['inbox:alice#alice'], subscribed: 'inbox:alice#alice' })

  // An EventSource with no channel: the hook's channels are the stream's. It waits for an event of the inbox.
  const ssePromise = page.evaluate(async () => await new Promise<string>((resolve) => {
    const source = new window.EventSource('/v1/sse')
    source.onmessage = (m: { data: string }) => { const f = JSON.parse(m.data); if (f.type === 'event') { source.close(); resolve(JSON.stringify(f.data)) } }
    source.addEventListener('open', () => { window.sseReady = true })
  }))
  await page.waitForFunction(() => window.sseReady === true)
  const poll = await page.evaluate(async () => {
    const res = await fetch('/v1/poll?timeout=0')
    return { status: res.status, body: await res.json() as { subscribed: Array<{ channel: string }> } }
  })
  assert.equal(poll.status, 200)
  assert.deepEqual(poll.body.subscribed.map((s: { channel: string }) => s.channel), ['inbox:alice#alice'])
  assert.equal((await publish(h.url, 'inbox:alice#alice', { hello: 'alice' })).status, 201)
  assert.equal(await ssePromise, '{"hello":"alice"}')
  assert.ok(asked.includes('websocket') && asked.includes('sse') && asked.includes('long-poll'), asked.join(','))

  // The other site: same browser, same cookie (cookies do not care about ports), refused before the hook is asked.
  const before = asked.length
  const evil = await context.newPage()
  await evil.goto(otherUrl)
  const hijack = await evil.evaluate(async (url: string) => await new Promise<string>((resolve) => {
    const socket = new window.WebSocket(url)
    socket.onmessage = (m: { data: string }) => resolve('got a frame: ' + m.data)
    socket.onclose = (e: { code: number }) => resolve('closed ' + String(e.code))
  }), wsUrl)
  assert.equal(hijack, 'closed 1006', 'the upgrade was refused (a browser sees only an abnormal close)')
  assert.equal(asked.length, before, 'the application was never asked about the other site')
  const refused = await fetch(h.url + '/v1/sse', { headers: { cookie: 'session=alice-ok', origin: otherUrl.slice(0, -1) } })
  assert.equal(refused.status, 403)
  assert.equal((await refused.json() as { code: string }).code, 'HERALD_ERR_ORIGIN_NOT_ALLOWED')
})

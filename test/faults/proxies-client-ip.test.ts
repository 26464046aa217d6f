import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, request } from 'node:http'
import { SECRET, token } from '../helper.js'
import { cleanup, startServer } from '../support/process.js'
import { PROXIES, proxySkipReason, useProxy, wsAttempt, type WsAttempt } from '../support/proxies.js'

/*
 * The client's address behind the shipped proxies. Both configs pass it to the nodes in X-Forwarded-For (overwriting
 * whatever the client claimed). Herald's per-address limits — CONNECT_RATE / CONNECT_BURST and the lockout after
 * failed authentications — key on the request's address, which is the proxy's for every client unless the node
 * is told to believe that proxy (TRUST_PROXY). Without it, the limits meant for one address apply to all clients
 * behind the proxy together: one client's burst or bad tokens refuse everyone.
 * The nodes are real server processes (src/server.ts reads TRUST_PROXY); the proxy runs on 127.0.0.1.
 */

// Loopback addresses other than 127.0.0.1 stand for different clients (Linux routes all of 127/8 to lo).
const A = '127.0.0.2'
const B = '127.0.0.3'
const C = '127.0.0.4'
const D = '127.0.0.5'

async function node (t: TestContext, env: Record<string, string>): Promise<{ port: number, wsUrl: string }> {
  const server = await startServer({ JWT_SECRET: SECRET, LOG_LEVEL: 'warn', ...env })
  cleanup(t, server)
  return server
}

const opened = (t: TestContext, attempt: WsAttempt): boolean => {
  if ('ws' in attempt) { t.after(() => attempt.ws.close()); return true }
  return false
}
const describe = (attempt: WsAttempt): string => 'ws' in attempt ? 'opened' : `${attempt.status} ${JSON.stringify(attempt.body)}`

/** WebSocket attempts from one address, each under a new subject (so that only the address buckets can refuse), each claiming another address. */
function attempts (): (url: string, from: string) => Promise<WsAttempt> {
  let n = 0
  return async (url, from) => {
    n++
    return await wsAttempt(url, { token: token({ sub: `s${n}` }), localAddress: from, headers: { 'x-forwarded-for': `198.51.100.${n}` } })
  }
}

for (const kind of PROXIES) {
  const skip = proxySkipReason(kind)

  void test(`${kind}: the client's own address reaches the node in X-Forwarded-For, whatever the client claimed`, { skip }, async (t) => {
    const echo = createServer((req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ xff: req.headers['x-forwarded-for'], peer: req.socket.remoteAddress }))
    })
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve))
    t.after(() => { echo.closeAllConnections(); echo.close() })
    const proxy = await useProxy(t, kind, { upstreams: [`127.0.0.1:${(echo.address() as { port: number }).port}`] })
    const seen = await new Promise<{ xff: string, peer: string }>((resolve, reject) => {
      const req = request(`${proxy.url}/v1/channels/x/events`, { localAddress: B, headers: { 'x-forwarded-for': '203.0.113.9' }, agent: false }, (res) => {
        let body = ''
        res.on('data', (c: Buffer) => { body += c.toString() })
        res.on('end', () => resolve(JSON.parse(body)))
      })
      req.on('error', reject)
      req.end()
    })
    assert.equal(seen.xff, B, 'the client address, not the forged header')
    assert.equal(seen.peer, '127.0.0.1', 'the node itself sees the proxy')
  })

  void test(`${kind}: with TRUST_PROXY naming the proxy, CONNECT_BURST is per client behind it; a header forged by a client is believed neither directly nor through the proxy`, { skip }, async (t) => {
    const n = await node(t, { TRUST_PROXY: '127.0.0.1', CONNECT_BURST: '3', CONNECT_RATE: '0.1' })
    const attempt = attempts()
    // 1. Directly from A (not a trusted proxy): its forged X-Forwarded-For headers are ignored, so A spends its own burst.
    for (let i = 0; i < 3; i++) assert.ok(opened(t, await attempt(n.wsUrl, A)))
    const aAgain = await attempt(n.wsUrl, A)
    assert.ok(!opened(t, aAgain) && 'status' in aAgain && aAgain.status === 429, `A is over its own burst, whatever it claimed: ${describe(aAgain)}`)
    assert.ok(opened(t, await attempt(n.wsUrl, B)), 'directly, B is not affected by A')
    // 2. Through the proxy: C spends its burst (the proxy replaced what C claimed), and D still connects.
    const proxy = await useProxy(t, kind, { upstreams: [`127.0.0.1:${n.port}`] })
    for (let i = 0; i < 3; i++) assert.ok(opened(t, await attempt(proxy.wsUrl, C)))
    const cAgain = await attempt(proxy.wsUrl, C)
    assert.ok(!opened(t, cAgain) && 'status' in cAgain && cAgain.status === 429, `through ${kind}, C is over its own burst: ${describe(cAgain)}`)
    const d = await attempt(proxy.wsUrl, D)
    assert.ok(opened(t, d), `through ${kind}, D was refused (${describe(d)}): C's connections were counted against D`)
  })

  void test(`${kind}: without TRUST_PROXY every client behind the proxy shares the proxy's CONNECT_BURST (why TRUST_PROXY is needed; the test above can fail)`, { skip }, async (t) => {
    const n = await node(t, { CONNECT_BURST: '3', CONNECT_RATE: '0.1' })
    const proxy = await useProxy(t, kind, { upstreams: [`127.0.0.1:${n.port}`] })
    const attempt = attempts()
    for (let i = 0; i < 3; i++) assert.ok(opened(t, await attempt(proxy.wsUrl, C)))
    const d = await attempt(proxy.wsUrl, D)
    assert.ok(!opened(t, d) && 'status' in d && d.status === 429, `D is refused for C's burst: ${describe(d)}`)
    assert.match(JSON.stringify(d), /new connections of this address/)
  })

  void test(`${kind}: with TRUST_PROXY, one client's failed authentications through the proxy do not lock out another client`, { skip }, async (t) => {
    const n = await node(t, { TRUST_PROXY: '127.0.0.1', RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW: '60' })
    const proxy = await useProxy(t, kind, { upstreams: [`127.0.0.1:${n.port}`] })
    const bad = token({ sub: 'mallory' }, { key: 'not-the-secret-0123456789' })
    for (let i = 0; i < 5; i++) {
      const refused = await wsAttempt(proxy.wsUrl, { token: bad, localAddress: A })
      assert.ok(!opened(t, refused) && 'status' in refused && refused.status === 401, `A's bad token is refused: ${describe(refused)}`)
    }
    const locked = await wsAttempt(proxy.wsUrl, { token: token({ sub: 'alice' }), localAddress: A })
    assert.ok(!opened(t, locked) && 'status' in locked && locked.status === 429, `A itself is locked out, even with a good token: ${describe(locked)}`)
    const b = await wsAttempt(proxy.wsUrl, { token: token({ sub: 'bob' }), localAddress: B })
    assert.ok(opened(t, b), `through ${kind}, B's good token was refused (${describe(b)}): A's failures were counted against B`)
  })
}

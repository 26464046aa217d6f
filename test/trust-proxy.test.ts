import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { trustProxyOption, trustProxyProblems } from '../src/config.js'
import { SECRET, token } from './helper.js'
import { cleanup, startServer, spawnTs, withTimeout, type Server } from './support/process.js'

/*
 * TRUST_PROXY: behind a proxy every client arrives from the proxy's address, so the per-address limits would
 * count all clients together. With the proxy named, Herald takes the client's address from X-Forwarded-For;
 * without it, a client that writes X-Forwarded-For itself gains nothing (it would otherwise pick its own bucket).
 * The server runs as a real process; each SSE connection carries a token of its own subject, so only the
 * per-address bucket of CONNECT_BURST=2 can refuse it.
 */

let subject = 0
async function sse (server: Server, forwardedFor: string): Promise<number> {
  const ctl = new AbortController()
  const res = await fetch(`${server.url}/v1/sse?channel=room&token=${token({ sub: `u${++subject}`, subscribe: ['*'] })}`, {
    headers: { 'x-forwarded-for': forwardedFor },
    signal: ctl.signal
  })
  // The status is all this test needs: end the stream (or the error body) at once.
  ctl.abort()
  await res.body?.cancel().catch(() => {})
  return res.status
}

async function server (t: TestContext, env: Record<string, string>): Promise<Server> {
  const s = await startServer({ JWT_SECRET: SECRET, LOG_LEVEL: 'warn', CONNECT_RATE: '0.1', CONNECT_BURST: '2', ...env })
  cleanup(t, s)
  return s
}

test('TRUST_PROXY names the proxy: each forwarded client has its own connection budget', async (t) => {
  const s = await server(t, { TRUST_PROXY: '127.0.0.1' })
  assert.deepEqual([await sse(s, '198.51.100.1'), await sse(s, '198.51.100.1'), await sse(s, '198.51.100.1')], [200, 200, 429])
  // Another client behind the same proxy is not held back by the first one's budget.
  assert.equal(await sse(s, '198.51.100.2'), 200)
})

test('without TRUST_PROXY a forged X-Forwarded-For is ignored: the peer address keeps one budget', async (t) => {
  const s = await server(t, {})
  assert.deepEqual([await sse(s, '198.51.100.1'), await sse(s, '198.51.100.2'), await sse(s, '198.51.100.3')], [200, 200, 429])
})

test('TRUST_PROXY from an address it does not name is not believed', async (t) => {
  const s = await server(t, { TRUST_PROXY: '10.0.0.0/8' })
  assert.deepEqual([await sse(s, '198.51.100.1'), await sse(s, '198.51.100.2'), await sse(s, '198.51.100.3')], [200, 200, 429])
})

test('TRUST_PROXY as a hop count takes the address one hop back', async (t) => {
  const s = await server(t, { TRUST_PROXY: '1' })
  // A client that prepends its own forged entries gets the address the proxy saw, not the forged one.
  assert.deepEqual([await sse(s, '203.0.113.7, 198.51.100.1'), await sse(s, '203.0.113.8, 198.51.100.1'), await sse(s, '203.0.113.9, 198.51.100.1')], [200, 200, 429])
  assert.equal(await sse(s, '203.0.113.7, 198.51.100.2'), 200)
})

test('TRUST_PROXY values: addresses, CIDRs, range names and hop counts; anything else is refused at start-up', async (t) => {
  assert.deepEqual(trustProxyProblems('127.0.0.1, 10.0.0.0/8,fd00::/8,loopback,uniquelocal'), [])
  assert.deepEqual(trustProxyProblems('2'), [])
  for (const bad of ['0', '17', 'everyone', '10.0.0.0/33', '::1/129', '1.2.3.4/8/8', '10.0.0.0/x', '__proto__', 'true']) {
    assert.equal(trustProxyProblems(bad).length, 1, bad)
  }
  assert.equal(trustProxyOption(undefined), false)
  assert.equal(trustProxyOption(' 127.0.0.1 , ::1'), '127.0.0.1,::1')
  const hops = trustProxyOption('2') as (a: string, hop: number) => boolean
  assert.deepEqual([0, 1, 2].map((h) => hops('x', h)), [true, true, false])

  const proc = spawnTs('src/server.ts', [], { env: { JWT_SECRET: SECRET, TRUST_PROXY: 'everyone', PORT: '0' } })
  cleanup(t, proc)
  const { code } = await withTimeout(proc.exited, 20_000, 'a bad TRUST_PROXY to stop the server')
  assert.equal(code, 78)
  assert.match(proc.stderr(), /TRUST_PROXY="everyone"/)
})

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { createSigner } from 'fast-jwt'
import { matches, can, type Principal } from '../src/auth/permissions.js'
import { SECRET, token, startHerald, eachBus, publish, until, WsClient } from './helper.js'
import { VerifiedTokens } from '../src/auth/jwt.js'

// ------------------------------------------------------------------ tokens that must be refused

const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
const nowSec = (): number => Math.floor(Date.now() / 1000)

/** Every way a token can be wrong, with the 401 code Herald must answer. `null` means: send no token at all. */
function badTokens (): Array<{ name: string, token: string | null, code: string }> {
  return [
    { name: 'no token', token: null, code: 'HERALD_ERR_UNAUTHORIZED' },
    { name: 'bad signature', token: token({}, { key: 'some-other-secret-0123456789' }), code: 'HERALD_ERR_UNAUTHORIZED' },
    {
      name: 'expired',
      token: createSigner({ key: SECRET })({ sub: 'tester', subscribe: ['*'], publish: ['*'], iat: nowSec() - 120, exp: nowSec() - 60 }),
      code: 'HERALD_ERR_TOKEN_EXPIRED'
    },
    {
      name: 'alg none',
      token: b64url({ alg: 'none', typ: 'JWT' }) + '.' + b64url({ sub: 'tester', subscribe: ['*'], publish: ['*'], exp: nowSec() + 3600 }) + '.',
      code: 'HERALD_ERR_UNAUTHORIZED'
    },
    { name: 'no sub claim', token: createSigner({ key: SECRET, expiresIn: 3600_000 })({ subscribe: ['*'], publish: ['*'] }), code: 'HERALD_ERR_UNAUTHORIZED' },
    { name: 'algorithm not allowed (HS512)', token: createSigner({ key: SECRET, algorithm: 'HS512', expiresIn: 3600_000 })({ sub: 'tester', subscribe: ['*'], publish: ['*'] }), code: 'HERALD_ERR_UNAUTHORIZED' },
    { name: 'not a JWT', token: 'not-a-jwt', code: 'HERALD_ERR_UNAUTHORIZED' },
    { name: 'subscribe claim not a list', token: token({ subscribe: 'chat:*' }), code: 'HERALD_ERR_UNAUTHORIZED' }
  ]
}

// ------------------------------------------------------------------ one request per HTTP transport

type HttpKind = 'REST publish' | 'REST history' | 'SSE' | 'long-poll'
const HTTP_KINDS: HttpKind[] = ['REST publish', 'REST history', 'SSE', 'long-poll']

interface HttpAnswer { status: number, body: any, contentType: string | null }

/**
 * Makes one request of `kind` for `channel` with the token in the Authorization header (or in `?token=` when
 * `query` is set, or not at all when `tok` is null). A 200 SSE stream is read until its `subscribed` frame and
 * then dropped, so the answer is always complete.
 */
async function httpAttempt (base: string, kind: HttpKind, channel: string, tok: string | null, query = false): Promise<HttpAnswer> {
  const qs = new URLSearchParams()
  const headers: Record<string, string> = {}
  if (tok !== null && query) qs.set('token', tok)
  if (tok !== null && !query) headers.authorization = `Bearer ${tok}`
  let path: string
  let init: RequestInit = { headers }
  switch (kind) {
    case 'REST publish':
      path = `/v1/channels/${encodeURIComponent(channel)}/events`
      headers['content-type'] = 'application/json'
      init = { method: 'POST', headers, body: JSON.stringify({ data: { hello: 1 } }) }
      break
    case 'REST history':
      path = `/v1/channels/${encodeURIComponent(channel)}/events`
      break
    case 'SSE':
      path = '/v1/sse'
      qs.append('channel', channel)
      headers.accept = 'text/event-stream'
      break
    case 'long-poll':
      path = '/v1/poll'
      qs.append('channel', channel)
      qs.set('timeout', '0')
      break
  }
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), 5000)
  try {
    const q = qs.toString()
    const res = await fetch(base + path + (q === '' ? '' : '?' + q), { ...init, signal: controller.signal })
    const contentType = res.headers.get('content-type')
    if (kind === 'SSE' && res.status === 200) {
      let text = ''
      const decoder = new TextDecoder()
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        text += decoder.decode(chunk, { stream: true })
        if (text.includes('"type":"subscribed"')) break
      }
      controller.abort()
      return { status: 200, body: text, contentType }
    }
    return { status: res.status, body: await res.json(), contentType }
  } finally {
    clearTimeout(timer)
  }
}

function assertError (answer: { status: number, body: any }, status: number, code: string, what: string): void {
  assert.equal(answer.status, status, `${what}: status (body ${JSON.stringify(answer.body)})`)
  assert.equal(answer.body?.code, code, `${what}: code`)
  assert.equal(answer.body?.statusCode, status, `${what}: statusCode in body`)
  assert.equal(typeof answer.body?.message, 'string', `${what}: message`)
  assert.equal(typeof answer.body?.error, 'string', `${what}: error`)
}

function assertOk (answer: HttpAnswer, kind: HttpKind, what: string): void {
  const expected = kind === 'REST publish' ? 201 : 200
  assert.equal(answer.status, expected, `${what}: ${JSON.stringify(answer.body)}`)
  if (kind === 'SSE') assert.match(answer.body as string, /"type":"subscribed"/, what)
}

// ------------------------------------------------------------------ WebSocket refusals

interface RawResponse { statusLine: string, status: number, headers: string, body: string }

/** Sends a raw WebSocket upgrade request over TCP and returns the first HTTP response it gets. */
async function rawUpgrade (port: number, path: string, extraHeaders: Record<string, string> = {}): Promise<RawResponse> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let buf = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('no complete response within 3 s; got ' + JSON.stringify(buf))) }, 3000)
    const finish = (): boolean => {
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return false
      const head = buf.slice(0, end)
      const statusLine = head.split('\r\n')[0]
      const status = Number(statusLine.split(' ')[1])
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)
      const body = buf.slice(end + 4)
      // A 101 has no body; anything else carries the JSON error (with a content-length).
      if (status !== 101 && length !== null && Buffer.byteLength(body) < Number(length[1])) return false
      clearTimeout(timer)
      socket.destroy()
      resolve({ statusLine, status, headers: head, body })
      return true
    }
    socket.on('connect', () => {
      const lines = [
        `GET ${path} HTTP/1.1`,
        `Host: 127.0.0.1:${port}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Version: 13',
        ...Object.entries(extraHeaders).map(([k, v]) => `${k}: ${v}`)
      ]
      socket.write(lines.join('\r\n') + '\r\n\r\n')
    })
    socket.on('data', (d: Buffer) => { buf += d.toString('latin1'); finish() })
    socket.on('close', () => { if (!finish()) { clearTimeout(timer); reject(new Error('connection closed without a response: ' + JSON.stringify(buf))) } })
    socket.on('error', () => {})
  })
}

async function wsRefused (wsUrl: string, tok: string | null, query = false): Promise<{ status: number, body: any }> {
  try {
    const client = await WsClient.connect(wsUrl, { token: tok, query })
    client.close()
  } catch (err) {
    const e = err as { status?: number, body?: any }
    if (e.status === undefined) throw err
    return { status: e.status, body: e.body }
  }
  assert.fail('the WebSocket upgrade succeeded but should have been refused')
}

// ================================================================== tests

test('every HTTP transport refuses missing and invalid tokens with 401 and the right code', async (t) => {
  const { url } = await startHerald(t)
  for (const bad of badTokens()) {
    for (const kind of HTTP_KINDS) {
      const answer = await httpAttempt(url, kind, 'room:1', bad.token)
      assertError(answer, 401, bad.code, `${kind} with ${bad.name}`)
      assert.match(answer.contentType ?? '', /^application\/json/, `${kind} with ${bad.name}: content-type`)
    }
    // The same tokens in ?token= are refused just the same (where the query form is accepted).
    if (bad.token !== null) {
      for (const kind of ['SSE', 'long-poll'] as const) {
        assertError(await httpAttempt(url, kind, 'room:1', bad.token, true), 401, bad.code, `${kind} with ${bad.name} in ?token=`)
      }
    }
  }
  // Nothing was published by any refused request.
  const history = await httpAttempt(url, 'REST history', 'room:1', token())
  assert.equal(history.status, 200)
  assert.equal(history.body.offset, 0)
  assert.deepEqual(history.body.events, [])
})

test('a non-Bearer Authorization header is refused, and the header takes precedence over ?token=', async (t) => {
  const { url } = await startHerald(t)
  const basic = await fetch(`${url}/v1/channels/room/events`, { headers: { authorization: 'Basic dXNlcjpwYXNz' } })
  assertError({ status: basic.status, body: await basic.json() }, 401, 'HERALD_ERR_UNAUTHORIZED', 'Basic auth')
  // A bad header is not rescued by a good query token.
  const both = await fetch(`${url}/v1/poll?channel=room&timeout=0&token=${token()}`, { headers: { authorization: `Bearer ${token({}, { key: 'wrong-secret-wrong-secret' })}` } })
  assertError({ status: both.status, body: await both.json() }, 401, 'HERALD_ERR_UNAUTHORIZED', 'bad header + good query token')
  // A good header with a bad query token is accepted.
  const ok = await fetch(`${url}/v1/poll?channel=room&timeout=0&token=garbage`, { headers: { authorization: `Bearer ${token()}` } })
  assert.equal(ok.status, 200)
})

eachBus('the WebSocket upgrade is refused before it happens for every bad token', async (t, bus) => {
  const { wsUrl, url, port } = await startHerald(t, { redisUrl: bus.redisUrl })
  for (const bad of badTokens()) {
    // The ws client sees an HTTP response ('unexpected-response'), not an open socket.
    const refused = await wsRefused(wsUrl, bad.token)
    assertError(refused, 401, bad.code, `ws client with ${bad.name}`)
    if (bad.token !== null) assertError(await wsRefused(wsUrl, bad.token, true), 401, bad.code, `ws client with ${bad.name} in ?token=`)
    // Raw TCP: the status line is 401, never 101 Switching Protocols.
    const raw = await rawUpgrade(port, '/v1/ws', bad.token === null ? {} : { Authorization: `Bearer ${bad.token}` })
    assert.match(raw.statusLine, /^HTTP\/1\.1 401 /, `raw upgrade with ${bad.name}: ${raw.statusLine}`)
    assert.notEqual(raw.status, 101)
    assert.doesNotMatch(raw.headers, /sec-websocket-accept/i)
    assert.equal(JSON.parse(raw.body).code, bad.code, `raw upgrade with ${bad.name}: body code`)
    if (bad.token !== null) {
      const rawQuery = await rawUpgrade(port, `/v1/ws?token=${encodeURIComponent(bad.token)}`)
      assert.equal(rawQuery.status, 401, `raw upgrade with ${bad.name} in ?token=`)
    }
  }
  // A good token still upgrades (raw: 101 with an accept header; ws client: a `connected` frame).
  const good = await rawUpgrade(port, '/v1/ws', { Authorization: `Bearer ${token()}` })
  assert.equal(good.status, 101)
  assert.match(good.headers, /sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i)
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  const hello = await ws.waitFor((f) => f.type === 'connected')
  assert.equal(hello.sub, 'tester')
  // And the server served everything while refusing: a publish reaches the subscriber.
  await ws.subscribe('after:refusals')
  assert.equal((await publish(url, 'after:refusals', { ok: true })).status, 201)
  const [event] = await ws.events('after:refusals', 1)
  assert.deepEqual(event.data, { ok: true })
})

test('a channel outside the token\'s patterns is 403 HERALD_ERR_FORBIDDEN on every HTTP transport', async (t) => {
  const { url } = await startHerald(t)
  const chatOnly = token({ subscribe: ['chat:*'], publish: ['chat:*'] })
  for (const kind of HTTP_KINDS) {
    const answer = await httpAttempt(url, kind, 'news', chatOnly)
    assertError(answer, 403, 'HERALD_ERR_FORBIDDEN', `${kind} on news`)
    assert.match(answer.body.message, /news/)
    assertOk(await httpAttempt(url, kind, 'chat:lobby', chatOnly), kind, `${kind} on chat:lobby`)
  }
  // SSE and long-poll are all-or-nothing: one forbidden channel refuses the whole request.
  for (const path of ['/v1/sse', '/v1/poll']) {
    const res = await fetch(`${url}${path}?channel=chat:a&channel=news&timeout=0`, { headers: { authorization: `Bearer ${chatOnly}` } })
    assertError({ status: res.status, body: await res.json() }, 403, 'HERALD_ERR_FORBIDDEN', `${path} with one forbidden channel`)
  }
  // publish and subscribe are separate rights.
  const readOnly = token({ subscribe: ['*'], publish: [] })
  assertError(await httpAttempt(url, 'REST publish', 'chat:x', readOnly), 403, 'HERALD_ERR_FORBIDDEN', 'publish with a read-only token')
  assertOk(await httpAttempt(url, 'REST history', 'chat:x', readOnly), 'REST history', 'history with a read-only token')
  const writeOnly = token({ subscribe: [], publish: ['*'] })
  assertOk(await httpAttempt(url, 'REST publish', 'chat:x', writeOnly), 'REST publish', 'publish with a write-only token')
  for (const kind of ['REST history', 'SSE', 'long-poll'] as const) {
    assertError(await httpAttempt(url, kind, 'chat:x', writeOnly), 403, 'HERALD_ERR_FORBIDDEN', `${kind} with a write-only token`)
  }
  // Nothing reached news.
  const news = await httpAttempt(url, 'REST history', 'news', token())
  assert.equal(news.body.offset, 0)
})

test('on a WebSocket a forbidden subscribe or publish is an error frame and the connection stays usable', async (t) => {
  const { url, wsUrl } = await startHerald(t)
  const ws = await WsClient.connect(wsUrl, { token: token({ subscribe: ['chat:*'], publish: ['chat:*'] }) })
  t.after(() => ws.close())
  await ws.waitFor((f) => f.type === 'connected')

  ws.send({ type: 'subscribe', channel: 'news', id: 'sub-news' })
  const subErr = await ws.waitFor((f) => f.type === 'error' && f.id === 'sub-news')
  assert.equal(subErr.code, 'HERALD_ERR_FORBIDDEN')
  assert.equal(subErr.channel, 'news')
  assert.equal(typeof subErr.message, 'string')

  ws.send({ type: 'publish', channel: 'news', data: { x: 1 }, id: 'pub-news' })
  const pubErr = await ws.waitFor((f) => f.type === 'error' && f.id === 'pub-news')
  assert.equal(pubErr.code, 'HERALD_ERR_FORBIDDEN')
  assert.equal(pubErr.channel, 'news')
  assert.equal(ws.closed, null)

  // Still usable: subscribe and publish on an allowed channel, over the same socket.
  await ws.subscribe('chat:room')
  ws.send({ type: 'publish', channel: 'chat:room', data: { hi: 1 }, id: 'pub-chat' })
  const ack = await ws.waitFor((f) => f.type === 'ack' && f.id === 'pub-chat')
  assert.equal(ack.offset, 1)
  const [event] = await ws.events('chat:room', 1)
  assert.deepEqual(event.data, { hi: 1 })
  // The forbidden publish stored nothing, and the forbidden subscribe delivers nothing.
  assert.equal((await publish(url, 'news', { n: 1 })).body.offset, 1)
  await ws.subscribe('chat:after')
  assert.equal(ws.frames.some((f) => f.type === 'event' && f.channel === 'news'), false)
})

test('?token= works for the WebSocket, SSE and long-poll', async (t) => {
  const { url, wsUrl } = await startHerald(t)
  const tok = token({ sub: 'query-user', subscribe: ['q:*'], publish: ['q:*'] })
  const ws = await WsClient.connect(wsUrl, { token: tok, query: true })
  t.after(() => ws.close())
  const hello = await ws.waitFor((f) => f.type === 'connected')
  assert.equal(hello.sub, 'query-user')
  await ws.subscribe('q:1')

  const sse = await httpAttempt(url, 'SSE', 'q:1', tok, true)
  assert.equal(sse.status, 200)
  assert.match(sse.body, /"type":"connected"[^\n]*"sub":"query-user"/)
  assert.match(sse.body, /"type":"subscribed"[^\n]*"channel":"q:1"/)

  const first = await httpAttempt(url, 'long-poll', 'q:1', tok, true)
  assert.equal(first.status, 200)
  assert.equal(typeof first.body.cursor, 'string')

  assert.equal((await publish(url, 'q:1', { via: 'rest' }, { token: tok })).status, 201)
  const [event] = await ws.events('q:1', 1)
  assert.deepEqual(event.data, { via: 'rest' })
  const polled = await fetch(`${url}/v1/poll?channel=q:1&timeout=2&cursor=${encodeURIComponent(first.body.cursor)}&token=${tok}`)
  assert.equal(polled.status, 200)
  const body = await polled.json() as { events: Array<{ data: unknown }> }
  assert.deepEqual(body.events.map((e) => e.data), [{ via: 'rest' }])
  // The query token's permissions apply: q:* only.
  assertError(await httpAttempt(url, 'long-poll', 'other', tok, true), 403, 'HERALD_ERR_FORBIDDEN', 'poll outside q:*')
})

test('channel patterns: chat:* , an exact name and * over REST, SSE, long-poll and WebSocket', async (t) => {
  const { url, wsUrl } = await startHerald(t)
  const cases: Array<{ patterns: string[], allowed: string[], denied: string[] }> = [
    { patterns: ['chat:*'], allowed: ['chat:a', 'chat:a:b'], denied: ['chatx', 'chat', 'xchat:a', 'Chat:a'] },
    { patterns: ['news'], allowed: ['news'], denied: ['news:x', 'newsx', 'new', 'xnews'] },
    { patterns: ['*'], allowed: ['anything', 'a:b:c', 'chatx', '@x.y-z_1'], denied: [] }
  ]
  for (const { patterns, allowed, denied } of cases) {
    const tok = token({ subscribe: patterns, publish: patterns })
    const ws = await WsClient.connect(wsUrl, { token: tok })
    try {
      for (const channel of allowed) {
        for (const kind of HTTP_KINDS) assertOk(await httpAttempt(url, kind, channel, tok), kind, `${JSON.stringify(patterns)} allows ${kind} on ${channel}`)
        const sub = await ws.subscribe(channel)
        assert.equal(sub.channel, channel)
      }
      for (const channel of denied) {
        for (const kind of HTTP_KINDS) assertError(await httpAttempt(url, kind, channel, tok), 403, 'HERALD_ERR_FORBIDDEN', `${JSON.stringify(patterns)} denies ${kind} on ${channel}`)
        const id = 'deny-' + channel
        ws.send({ type: 'subscribe', channel, id })
        const err = await ws.waitFor((f) => f.type === 'error' && f.id === id)
        assert.equal(err.code, 'HERALD_ERR_FORBIDDEN', `${JSON.stringify(patterns)} denies ws subscribe on ${channel}`)
      }
    } finally {
      ws.close()
    }
  }
})

// ------------------------------------------------------------------ permissions.ts, as pure functions

test('matches: * wildcard semantics', () => {
  assert.equal(matches('*', 'anything:at:all'), true)
  assert.equal(matches('*', 'x'), true)
  assert.equal(matches('chat:*', 'chat:a'), true)
  assert.equal(matches('chat:*', 'chat:a:b'), true)
  assert.equal(matches('chat:*', 'chat:'), true, '* also matches an empty run')
  assert.equal(matches('chat:*', 'chatx'), false)
  assert.equal(matches('chat:*', 'chat'), false)
  assert.equal(matches('chat:*', 'xchat:a'), false, 'patterns are anchored at the start')
  assert.equal(matches('*:log', 'a:b:log'), true)
  assert.equal(matches('*:log', 'a:log:x'), false, 'patterns are anchored at the end')
  assert.equal(matches('a*b*c', 'aXXbYYc'), true)
  assert.equal(matches('a*b*c', 'abc'), true)
  assert.equal(matches('a*b*c', 'ac'), false)
  assert.equal(matches('**', 'x'), true)
  assert.equal(matches('news', 'news'), true)
  assert.equal(matches('news', 'news2'), false)
  assert.equal(matches('news', 'new'), false)
  assert.equal(matches('News', 'news'), false, 'case-sensitive')
  assert.equal(matches('chat:*', 'Chat:a'), false, 'case-sensitive with a wildcard')
})

test('matches: regular-expression characters in patterns are literal', () => {
  // Without a wildcard: plain equality.
  assert.equal(matches('a.b', 'axb'), false)
  assert.equal(matches('a.b', 'a.b'), true)
  // With a wildcard the pattern is compiled; every other character must stay literal.
  const literal: Array<[pattern: string, hit: string, misses: string[]]> = [
    ['a.b*', 'a.bc', ['axbc', 'aXb']],
    ['a+*', 'a+b', ['aa', 'aaa']],
    ['a?*', 'a?x', ['', 'x', 'ab']],
    ['(x|y)*', '(x|y)z', ['x', 'y', 'xz']],
    ['[ab]*', '[ab]c', ['a', 'b', 'ac']],
    ['^a*', '^ab', ['a', 'ab']],
    ['a$*', 'a$b', ['a', 'ab']],
    ['a{2}*', 'a{2}b', ['aa', 'aab']],
    ['a\\d*', 'a\\d1', ['a1', 'a12']],
    ['a-z*', 'a-zq', ['b', 'm']],
    ['@x.y*', '@x.y:1', ['@xzy:1']]
  ]
  for (const [pattern, hit, misses] of literal) {
    assert.equal(matches(pattern, hit), true, `${pattern} matches ${hit}`)
    for (const miss of misses) assert.equal(matches(pattern, miss), false, `${pattern} must not match ${miss}`)
  }
})

test('can: checks the action\'s own pattern list', () => {
  const p: Principal = { sub: 'u', subscribe: ['chat:*', 'news'], publish: ['chat:mine'] }
  assert.equal(can(p, 'subscribe', 'chat:x'), true)
  assert.equal(can(p, 'subscribe', 'news'), true)
  assert.equal(can(p, 'subscribe', 'sports'), false)
  assert.equal(can(p, 'publish', 'chat:mine'), true)
  assert.equal(can(p, 'publish', 'chat:x'), false, 'subscribe rights do not grant publish')
  assert.equal(can(p, 'publish', 'news'), false)
  const nobody: Principal = { sub: 'n', subscribe: [], publish: [] }
  assert.equal(can(nobody, 'subscribe', 'x'), false)
  assert.equal(can(nobody, 'publish', 'x'), false)
  const all: Principal = { sub: 'a', subscribe: ['*'], publish: ['*'] }
  assert.equal(can(all, 'subscribe', 'a:b:c'), true)
  assert.equal(can(all, 'publish', 'z'), true)
})

test('verified tokens are cached by their text, but never past their exp, the 10-minute re-check or the size bound', () => {
  const cache = new VerifiedTokens()
  const now = 1_000_000_000_000
  const p = (exp?: number): Principal => ({ sub: 's', subscribe: [], publish: ['*'], exp })
  cache.set('tok-a', p(now / 1000 + 60), now)
  assert.equal(cache.get('tok-a', now + 1000)?.sub, 's')
  // At exp the cached success turns into the verifier's own answer: expired.
  assert.throws(() => cache.get('tok-a', now + 60_000), (err: { code?: string }) => err.code === 'HERALD_ERR_TOKEN_EXPIRED')
  assert.equal(cache.get('tok-a', now + 60_001), undefined, 'and it is forgotten')
  // Without exp: verified again after TTL_MS.
  cache.set('tok-b', p(), now)
  assert.ok(cache.get('tok-b', now + VerifiedTokens.TTL_MS - 1) !== undefined)
  assert.equal(cache.get('tok-b', now + VerifiedTokens.TTL_MS), undefined)
  // Oversized tokens are not kept; past MAX the oldest go first.
  cache.set('x'.repeat(VerifiedTokens.MAX_TOKEN_CHARS + 1), p(), now)
  assert.equal(cache.size, 0)
  for (let i = 0; i <= VerifiedTokens.MAX; i++) cache.set('t' + i, p(), now)
  assert.equal(cache.size, VerifiedTokens.MAX)
  assert.equal(cache.get('t0', now), undefined)
  assert.ok(cache.get('t' + VerifiedTokens.MAX, now) !== undefined)
})

test('a REST publisher reusing one token: accepted while it is valid, 401 TOKEN_EXPIRED once it has expired', async (t) => {
  const { url } = await startHerald(t)
  // An explicit exp in whole seconds, 4 s ahead: at least 3 s of validity (expiresIn is floored to the second,
  // which could leave a fraction of the intended window).
  const exp = nowSec() + 4
  const tok = createSigner({ key: SECRET })({ sub: 'brief', publish: ['*'], exp })
  // The same token, reused until it is refused. Every publish sent before exp is accepted (after the first, from
  // the node's cache of verified tokens); the refusal comes no earlier than exp — the cache never outlives a
  // token's exp — and says TOKEN_EXPIRED. No fixed pause: the loop ends on the refusal itself.
  let accepted = 0
  let late: { status: number, body: any } | undefined
  await until(async () => {
    const sentAt = Date.now()
    const res = await publish(url, 'exp:1', { n: accepted + 1 }, { token: tok })
    if (res.status === 201) {
      assert.ok(sentAt < exp * 1000, `a publish sent ${sentAt - exp * 1000} ms after the token's exp was accepted`)
      accepted++
      return false
    }
    assert.ok(Date.now() >= exp * 1000, `refused ${exp * 1000 - Date.now()} ms before the token's exp: ${res.status} ${JSON.stringify(res.body)}`)
    late = res
    return true
  }, 'the reused token to be refused once expired', 4000 + 15_000)
  assert.ok(accepted >= 2, `the token was accepted ${accepted} times before its exp`)
  assert.equal(late!.status, 401)
  assert.equal(late!.body.code, 'HERALD_ERR_TOKEN_EXPIRED')
})

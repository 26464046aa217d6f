import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'

import { createSigner, createVerifier } from 'fast-jwt'
import { freePort, publish, poll, sleep, until, WsClient, SseClient, token as helperToken } from './helper.js'
import { type Server, spawnTs, startServer, cleanup, tempDir, withTimeout } from './support/process.js'

// The standalone server (src/server.ts) and the token CLI as real processes (test/support/process.ts).

const SERVER = 'src/server.ts'
const TOKEN_CLI = 'src/cli/token.ts'
const SECRET = 'server-test-secret-0123456789abcdef'

function sign (claims: Record<string, unknown>, key = SECRET): string {
  return createSigner({ key, expiresIn: 600_000 })({ subscribe: ['*'], publish: ['*'], ...claims })
}

let flushes = 0

/** Makes a request with a unique marker and waits until the server has logged it, so every earlier line is in. */
async function flushLogs (server: Server): Promise<void> {
  const marker = `flush-${process.pid}-${++flushes}`
  await fetch(`${server.url}/healthz?marker=${marker}`)
  const deadline = Date.now() + 3000
  while (!server.output().includes(marker)) {
    if (Date.now() > deadline) throw new Error('the server did not log the marker request')
    await sleep(20)
  }
}

/** Opens an SSE stream with the token in the query string, reads up to its `subscribed` frame, and drops it. */
async function sseWithQueryToken (base: string, channel: string, tok: string): Promise<number> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), 5000)
  try {
    const res = await fetch(`${base}/v1/sse?channel=${channel}&token=${tok}`, { signal: controller.signal })
    if (res.status !== 200) return res.status
    let text = ''
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      text += Buffer.from(chunk).toString()
      if (text.includes('"type":"subscribed"')) break
    }
    controller.abort()
    return 200
  } finally {
    clearTimeout(timer)
  }
}

/** Uses `tok` on every transport, in the header and in ?token=; returns the statuses, in order. */
async function useEverywhere (server: Server, tok: string): Promise<number[]> {
  const statuses: number[] = []
  statuses.push((await publish(server.url, 'logs:a', { n: 1 }, { token: tok })).status)
  // REST does not read ?token= (it would leak into access logs): refused for want of a token, logged all the same.
  statuses.push((await fetch(`${server.url}/v1/channels/logs:a/events?since=0&token=${tok}`)).status)
  statuses.push((await fetch(`${server.url}/v1/channels/logs:a/events`, { headers: { authorization: `Bearer ${tok}` } })).status)
  statuses.push((await fetch(`${server.url}/v1/poll?channel=logs:a&timeout=0&token=${tok}`)).status)
  statuses.push((await poll(server.url, ['logs:a'], { token: tok, timeout: 0 })).status)
  statuses.push(await sseWithQueryToken(server.url, 'logs:a', tok))
  for (const query of [true, false]) {
    try {
      const ws = await WsClient.connect(server.wsUrl, { token: tok, query })
      await ws.subscribe('logs:a')
      ws.close()
      await ws.waitClosed()
      statuses.push(101)
    } catch (err) {
      statuses.push((err as { status?: number }).status ?? -1)
    }
  }
  return statuses
}

/** Waiting long-polls on a server, from its /metrics. */
async function longPollConnections (base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith('herald_connections{transport="long-poll"} '))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

function assertNotLogged (output: string, tok: string, what: string): void {
  const signature = tok.split('.')[2]
  assert.ok(signature.length > 10)
  const lines = output.split('\n').filter((l) => l.includes(signature))
  assert.deepEqual(lines, [], `${what}: the token appears in the logs`)
}

// Two groups at a time: most of their time is process start-up (tsx), which is CPU-bound.
describe('standalone server and CLI', { concurrency: 2 }, () => {
  // ================================================================== a configured server

  // One process shared by these tests, in order (the last one stops it).
  describe('the standalone server with JWT_SECRET', { concurrency: 1 }, () => {
    let server: Server
    // POLL_TIMEOUT_MAX (its highest value) lets the drain test's waiting long-poll ask for two minutes (see there).
    before(async () => { server = await startServer({ JWT_SECRET: SECRET, LOG_LEVEL: 'debug', DRAIN_TIMEOUT: '2', POLL_TIMEOUT_MAX: '120' }) })
    after(async () => {
      await server?.kill()
      if (server !== undefined) rmSync(server.cwd, { recursive: true, force: true })
    })

    test('answers /healthz and /readyz, accepts tokens signed with its secret and only those', async () => {
      const health = await fetch(`${server.url}/healthz`)
      assert.equal(health.status, 200)
      const body = await health.json() as { status: string, bus: string }
      assert.deepEqual([body.status, body.bus], ['ok', 'memory'])
      assert.equal((await fetch(`${server.url}/readyz`)).status, 200)

      const res = await publish(server.url, 'room:1', { hello: 'world' }, { token: sign({ sub: 'alice' }) })
      assert.equal(res.status, 201)
      assert.deepEqual([res.body.channel, res.body.offset, res.body.duplicate], ['room:1', 1, false])
      const foreign = await publish(server.url, 'room:1', 1, { token: helperToken() })
      assert.equal(foreign.status, 401)
      assert.equal(foreign.body.code, 'HERALD_ERR_UNAUTHORIZED')
      const history = await fetch(`${server.url}/v1/channels/room:1/events`, { headers: { authorization: `Bearer ${sign({ sub: 'bob' })}` } })
      assert.deepEqual(((await history.json()) as { events: Array<{ data: unknown }> }).events.map((e) => e.data), [{ hello: 'world' }])
      // With a configured secret, nothing is written to the working directory.
      assert.equal(existsSync(join(server.cwd, '.herald')), false)
    })

    test('its logs never contain a token, from the header or ?token=, accepted or refused', async () => {
      const good = sign({ sub: 'log-user' })
      const bad = sign({ sub: 'log-user' }, 'not-the-server-secret-0123456789')
      const from = server.output().length
      assert.deepEqual(await useEverywhere(server, good), [201, 401, 200, 200, 200, 200, 101, 101])
      assert.deepEqual(await useEverywhere(server, bad), [401, 401, 401, 401, 401, 401, 401, 401])
      await flushLogs(server)
      const logs = server.output().slice(from)
      // The requests were logged (with debug level on), so the check below is not vacuous...
      assert.match(logs, /incoming request/)
      assert.match(logs, /\/v1\/poll\?channel=logs:a&timeout=0&token=\[redacted\]/)
      assert.match(logs, /websocket open/)
      // ...and no token is in them.
      assertNotLogged(logs, good, 'accepted token')
      assertNotLogged(logs, bad, 'refused token')
    })

    test('its logs never contain a token sent with a percent-encoded ?token= key', async () => {
      const tok = sign({ sub: 'encoded-user' })
      const from = server.output().length
      // %74 is "t": the query parser decodes the key, so Herald accepts this as ?token=.
      const res = await fetch(`${server.url}/v1/poll?channel=logs:b&timeout=0&%74oken=${tok}`)
      assert.equal(res.status, 200, 'the token is accepted')
      await flushLogs(server)
      assertNotLogged(server.output().slice(from), tok, '?%74oken=')
    })

    // Last: this ends the shared server.
    test('SIGTERM drains: WebSocket closed with 1012, SSE told and ended, long-poll answered, never ready again, exit 0', async (t) => {
      const tok = sign({ sub: 'drainer' })
      const ws = await WsClient.connect(server.wsUrl, { token: tok })
      t.after(() => ws.close())
      await ws.subscribe('room')
      const sse = await SseClient.open(server.url, ['room'], { token: tok })
      t.after(() => sse.close())
      await sse.waitFor((m) => m.data.type === 'subscribed')
      const first = await poll(server.url, ['room'], { token: tok, timeout: 0 })
      const waiting = poll(server.url, ['room'], { token: tok, cursor: first.body.cursor, timeout: 25 }).then(
        (r) => ({ status: r.status, body: r.body as unknown, at: Date.now() }),
        (err: Error) => ({ status: -1, body: err.message as unknown, at: Date.now() }))

      const published = await publish(server.url, 'room', { before: 'sigterm' }, { token: tok })
      assert.equal(published.status, 201)
      await ws.events('room', 1)
      await sse.waitEvents('room', 1)
      const polled = await waiting
      assert.equal(polled.status, 200, 'the long-poll got the event before the drain')
      // Another long-poll waits through the drain. It asks for two minutes: whatever answers it while the process
      // lives (see the exit below) is the drain, not its timeout.
      const cursor2 = (polled.body as { cursor: string }).cursor
      const waiting2 = poll(server.url, ['room'], { token: tok, cursor: cursor2, timeout: 120 }).then(
        (r) => ({ status: r.status, body: r.body as unknown }),
        (err: Error) => ({ status: -1, body: err.message as unknown }))
      // Waiting on the node: it counts as a long-poll connection there.
      await until(async () => await longPollConnections(server.url) === 1, 'the second long-poll is waiting on the server', 10_000)
      assert.equal((await fetch(`${server.url}/readyz`)).status, 200)

      process.kill(server.child.pid!, 'SIGTERM')
      const closed = await ws.waitClosed(10_000)
      assert.equal(closed.code, 1012)
      // The drain has begun: from now on the node must never report itself ready.
      const readiness: Array<number | string> = []
      let exited = false
      const watcher = (async () => {
        while (!exited) {
          try {
            readiness.push((await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(1000) })).status)
          } catch {
            readiness.push('refused')
          }
          await sleep(20)
        }
      })()

      const disconnect = await sse.waitFor((m) => m.data.type === 'disconnect', 10_000)
      assert.equal(disconnect.data.code, 1012)
      assert.equal(disconnect.data.reconnect, true)
      await withTimeout((async () => { while (!sse.ended) await sleep(20) })(), 10_000, 'the SSE stream to end')
      // The bounds of these waits are failure bounds (when to call it a hang), not claims about speed.
      const drained = await withTimeout(waiting2, 20_000, 'the waiting long-poll to be answered')
      const { code, signal } = await withTimeout(server.exited, 20_000, 'the process to exit after SIGTERM')
        .finally(() => { exited = true })
      await watcher
      assert.equal(signal, null)
      // Exit 0: close-with-grace ends a shutdown that outlasts DRAIN_TIMEOUT + 1 s with exit code 1, so the drain
      // finished within that.
      assert.equal(code, 0, server.output())
      // The waiting long-poll got an answer (200, from the live process: so within DRAIN_TIMEOUT + 1 s of
      // SIGTERM, far inside its two-minute timeout: the drain answered it), with a cursor to resume from on
      // another node.
      assert.equal(drained.status, 200, `long-poll during drain: ${JSON.stringify(drained.body)}`)
      assert.deepEqual((drained.body as { events: unknown[] }).events, [])
      assert.equal(typeof (drained.body as { cursor: unknown }).cursor, 'string')
      assert.ok(readiness.length >= 1)
      assert.ok(readiness.every((s) => s === 503 || s === 'refused'), `readiness during the drain: ${JSON.stringify(readiness)}`)
      assert.match(server.output(), /"signal":"SIGTERM".*"msg":"draining"/)
      await assert.rejects(fetch(`${server.url}/healthz`), 'nothing listens any more')
    })
  })

  // ================================================================== refusing to start

  test('a bad configuration stops the server with exit code 78 and a message naming the variable', { concurrency: true }, async (t) => {
    await Promise.all([
      t.test('NODE_ENV=production without JWT_SECRET', async (t) => {
        const proc = spawnTs(SERVER, [], { env: { NODE_ENV: 'production', PORT: String(await freePort()) } })
        cleanup(t, proc)
        const { code } = await withTimeout(proc.exited, 20_000, 'production without a secret to exit')
        assert.notEqual(code, 0)
        assert.equal(code, 78)
        assert.match(proc.stderr(), /JWT_SECRET/)
        assert.doesNotMatch(proc.output(), /Server listening/)
        assert.equal(existsSync(join(proc.cwd, '.herald')), false, 'no development secret in production')
      }),
      t.test('PORT=abc', async (t) => {
        const proc = spawnTs(SERVER, [], { env: { PORT: 'abc', JWT_SECRET: SECRET } })
        cleanup(t, proc)
        const { code } = await withTimeout(proc.exited, 20_000, 'PORT=abc to exit')
        assert.equal(code, 78)
        assert.match(proc.stderr(), /PORT="abc"/)
        assert.match(proc.stderr(), /Invalid configuration/)
        assert.doesNotMatch(proc.stderr(), /\n\s+at /, 'a clear message, not a stack trace')
      })
    ])
  })

  // ================================================================== development mode and the token CLI

  test('development mode without JWT_SECRET: a dev secret file, a ready token, and the CLI signs with the same secret', async (t) => {
    const cwd = tempDir()
    t.after(() => { rmSync(cwd, { recursive: true, force: true }) })
    const server = await startServer({ LOG_LEVEL: 'info' }, cwd)
    cleanup(t, server)
    const deadline = Date.now() + 5000
    while (!/TOKEN=\S+/.test(server.stdout())) {
      if (Date.now() > deadline) throw new Error('no TOKEN= line:\n' + server.output())
      await sleep(20)
    }
    const tok = /TOKEN=(\S+)/.exec(server.stdout())![1]
    assert.match(server.stdout(), /development mode/)

    // The secret is kept, private, in the working directory.
    const secretFile = join(cwd, '.herald', 'dev-secret')
    assert.ok(existsSync(secretFile))
    assert.equal(statSync(secretFile).mode & 0o777, 0o600)
    const secret = readFileSync(secretFile, 'utf8').trim()
    assert.ok(secret.length >= 16)
    const claims = createVerifier({ key: secret })(tok) as Record<string, unknown>
    assert.equal(claims.sub, 'dev')

    // The printed token works on every transport.
    assert.deepEqual(await useEverywhere(server, tok), [201, 401, 200, 200, 200, 200, 101, 101])

    // The CLI, run in the same directory without a secret, signs with the development secret.
    const cli = spawnTs(TOKEN_CLI, ['--sub', 'bob', '--publish', 'chat:*'], { cwd })
    const { code } = await withTimeout(cli.exited, 20_000, 'token CLI')
    assert.equal(code, 0, cli.output())
    const bobs = cli.stdout().trim()
    assert.equal((await publish(server.url, 'chat:x', 1, { token: bobs })).status, 201)
    assert.equal((await publish(server.url, 'news', 1, { token: bobs })).status, 403)

    // The token appears once in the output: on the banner's TOKEN= line, nowhere in the logs.
    await flushLogs(server)
    const lines = server.output().split('\n').filter((l) => l.includes(tok.split('.')[2]))
    assert.deepEqual(lines, [`  TOKEN=${tok}`])
    assertNotLogged(server.output(), bobs, 'CLI token')
  })

  test('the token CLI prints a token with the requested claims', { concurrency: true }, async (t) => {
    await Promise.all([
      t.test('--sub --subscribe --publish --ttl --secret', async (t) => {
        const spawnedAt = Math.floor(Date.now() / 1000)
        const cli = spawnTs(TOKEN_CLI, ['--sub', 'alice', '--subscribe', 'chat:*', '--publish', 'chat:mine,news', '--publish', 'x', '--ttl', '60', '--secret', SECRET])
        cleanup(t, cli)
        const { code } = await withTimeout(cli.exited, 20_000, 'token CLI')
        const exitedAt = Math.ceil(Date.now() / 1000)
        assert.equal(code, 0, cli.output())
        const printed = cli.stdout().trim()
        assert.match(printed, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'a single JWT on stdout')
        const claims = createVerifier({ key: SECRET })(printed) as Record<string, unknown>
        assert.equal(claims.sub, 'alice')
        assert.deepEqual(claims.subscribe, ['chat:*'])
        assert.deepEqual(claims.publish, ['chat:mine', 'news', 'x'])
        assert.equal((claims.exp as number) - (claims.iat as number), 60)
        // Issued now: signed between the spawn and the exit of the CLI (however long a busy machine made that).
        assert.ok((claims.iat as number) >= spawnedAt && (claims.iat as number) <= exitedAt, `iat ${claims.iat as number} outside [${spawnedAt}, ${exitedAt}]`)
        // Signed with that secret and nothing else.
        assert.throws(() => createVerifier({ key: 'another-secret-0123456789abcdef' })(printed))
      }),
      t.test('without --sub: usage and exit code 2', async (t) => {
        const cli = spawnTs(TOKEN_CLI, ['--subscribe', 'chat:*', '--secret', SECRET])
        cleanup(t, cli)
        const { code } = await withTimeout(cli.exited, 20_000, 'token CLI')
        assert.equal(code, 2)
        assert.match(cli.stderr(), /usage:/)
        assert.equal(cli.stdout(), '')
      })
    ])
  })
})

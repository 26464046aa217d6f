import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { connect, type Socket } from 'node:net'
import WebSocket from 'ws'
import { EventSource } from 'eventsource'
import { publish, redisSkipReason, startHerald, startRedis, token, until, WsClient } from '../helper.js'

// Peers that are slow on purpose: a Redis that hangs or answers late, clients that send their request a byte at a
// time, and a client that sends requests and never reads the answers. Each must cost the node a bounded amount,
// get an answer or an error within a bound, and leave every other client unaffected.

const skip = redisSkipReason()

test('a hung Redis (SIGSTOP): subscribes and publishes get an error within the command timeout, and work again once it is back', { skip }, async (t) => {
  const redis = await startRedis(t)
  const { url, wsUrl } = await startHerald(t, { redisUrl: redis.url })
  const ws = await WsClient.connect(wsUrl)
  await ws.subscribe('before:hang')
  process.kill(redis.proc.pid!, 'SIGSTOP')
  t.after(() => { try { process.kill(redis.proc.pid!, 'SIGCONT') } catch {} })
  // Neither waits forever: the bus answers within its command timeout (5 s).
  ws.send({ type: 'subscribe', channel: 'during:hang', id: 'h1' })
  const refused = await ws.waitFor((f) => f.id === 'h1', 15_000)
  assert.equal(refused.type, 'error')
  assert.equal(refused.code, 'HERALD_ERR_BUS_UNAVAILABLE')
  const pub = await publish(url, 'during:hang', { n: 1 })
  assert.equal(pub.status, 503)
  assert.equal(pub.body.code, 'HERALD_ERR_BUS_UNAVAILABLE')
  assert.equal((await fetch(`${url}/healthz`)).status, 200, 'the node itself keeps answering')
  process.kill(redis.proc.pid!, 'SIGCONT')
  await until(async () => (await publish(url, 'before:hang', { n: 2 })).status === 201, 'publishing works again', 15_000)
  await ws.events('before:hang', 1, 10_000)
  await ws.subscribe('after:hang')
})

test('a slow Redis (busy for 1.5 s): requests wait and then succeed; nothing is lost or doubled', { skip }, async (t) => {
  const redis = await startRedis(t)
  const { url, wsUrl } = await startHerald(t, { redisUrl: redis.url })
  const ws = await WsClient.connect(wsUrl)
  await ws.subscribe('slow:redis')
  const control = new Redis(redis.url)
  t.after(() => control.disconnect())
  await control.ping()
  // Written to Redis before the publishes below leave this process: a script that keeps Redis busy for 1.5 s (it
  // serves nothing else meanwhile), then the publishes are served.
  const slept = control.eval("local t0 = redis.call('TIME') repeat local t = redis.call('TIME') until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 1500000 return 1", 0)
  const results = await Promise.all([1, 2, 3].map(async (n) => await publish(url, 'slow:redis', { n })))
  assert.deepEqual(results.map((r) => r.status), [201, 201, 201])
  const events = await ws.events('slow:redis', 3, 10_000)
  assert.deepEqual(events.map((e) => e.offset), [1, 2, 3])
  await slept
})

/** Opens a raw TCP connection and sends `head` one byte at a time, never finishing; resolves when the server closes it. */
async function slowloris (port: number, head: string): Promise<{ closed: Promise<string> }> {
  const socket: Socket = connect(port, '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  let i = 0
  const drip = setInterval(() => { if (i < head.length && !socket.destroyed) socket.write(head[i++]) }, 100)
  let answer = ''
  socket.on('data', (d: Buffer) => { answer += d.toString() })
  const closed = new Promise<string>((resolve) => socket.once('close', () => { clearInterval(drip); resolve(answer) }))
  return { closed }
}

test('slowloris on the upgrade, SSE and long-poll routes: cut off after REQUEST_TIMEOUT, other clients served meanwhile', async (t) => {
  const h = await startHerald(t, { config: { requestTimeoutSeconds: 2 } })
  const tok = token()
  const heads = [
    `GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${tok}\r\nX-Pad: ${'p'.repeat(200)}\r\n\r\n`,
    `GET /v1/sse?channel=room HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\nX-Pad: ${'p'.repeat(200)}\r\n\r\n`,
    `GET /v1/poll?channel=room&timeout=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\nX-Pad: ${'p'.repeat(200)}\r\n\r\n`
  ]
  const attackers = await Promise.all(heads.flatMap((head) => Array.from({ length: 10 }, async () => await slowloris(h.port, head))))
  // Meanwhile, everybody else is served.
  const ws = await WsClient.connect(h.wsUrl)
  await ws.subscribe('room')
  assert.equal((await publish(h.url, 'room', { ok: 1 })).status, 201)
  await ws.events('room', 1)
  // Each attacker is cut off (before sending its whole head: 100 ms a byte), answered 408 or just closed.
  for (const answer of await Promise.all(attackers.map(async (a) => await a.closed))) {
    assert.ok(answer === '' || answer.startsWith('HTTP/1.1 408'), 'cut off: ' + JSON.stringify(answer.slice(0, 60)))
  }
  assert.equal(h.app.herald.connections.count(), 1, 'only the honest WebSocket holds a connection')
})

test('a client that sends pings and presence requests and never reads the answers is evicted at the buffer bound', async (t) => {
  const maxBufferBytes = 64 * 1024
  const h = await startHerald(t, {
    config: {
      maxBufferBytes,
      limits: { wsRate: 100_000, wsBurst: 100_000 },
      namespaces: { namespaces: { room: { presence: true } } }
    }
  })
  // Many members, so each presence answer is large.
  const members = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
    const c = await WsClient.connect(h.wsUrl, { token: token({ sub: 'member-' + i, info: { pad: 'i'.repeat(200) } }) })
    await c.subscribe('room:big')
    return c
  }))
  t.after(() => { for (const c of members) c.close() })
  const socket = new WebSocket(`${h.wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${token({ sub: 'greedy' })}` } })
  t.after(() => socket.terminate())
  await new Promise((resolve) => socket.once('open', resolve))
  let closeCode = 0
  socket.on('close', (code) => { closeCode = code })
  socket.send(JSON.stringify({ type: 'subscribe', channel: 'room:big', id: 's' }))
  ;(socket as unknown as { _socket: { pause: () => void } })._socket.pause()
  let sent = 0
  // Bounded: the answers outgrow the kernel's buffers and then the node's bound long before this many requests.
  while (sent < 20_000 && h.app.herald.connections.count() > members.length) {
    socket.send(JSON.stringify({ type: 'presence', channel: 'room:big', id: 'p' + sent }))
    socket.send(JSON.stringify({ type: 'ping', id: 'q' + sent }))
    sent++
    if (sent % 50 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  await until(() => h.app.herald.connections.count() === members.length, 'the greedy client was evicted', 20_000)
  const evicted = (await h.app.herald.metrics.evictions.get()).values.find((v) => v.labels.transport === 'websocket' && v.labels.reason === 'disconnect')
  assert.equal(evicted?.value, 1)
  ;(socket as unknown as { _socket: { resume: () => void } })._socket.resume()
  await until(() => closeCode !== 0, 'the greedy socket closed', 10_000)
  // The others are served as before.
  assert.equal((await publish(h.url, 'room:big', { after: true })).status, 201)
  await members[0].events('room:big', 1)
})

test('SSE: a refusal that will not pass (a full channel) is an HTTP 409 a stock EventSource gives up on; one that may pass ends the stream with 1012', { skip }, async (t) => {
  const redis = await startRedis(t)
  const h = await startHerald(t, { redisUrl: redis.url, config: { namespaces: { namespaces: { tiny: { maxSubscribers: 1 } } } } })
  const first = await WsClient.connect(h.wsUrl)
  await first.subscribe('tiny:room')
  let attempts = 0
  let failed: { status?: number } | undefined
  const es = new EventSource(`${h.url}/v1/sse?channel=tiny:room`, {
    fetch: async (input, init) => {
      attempts++
      const res = await fetch(input, { ...init, headers: { ...init.headers, authorization: `Bearer ${token()}` } })
      if (res.status !== 200) failed = { status: res.status }
      return res
    }
  })
  t.after(() => es.close())
  await until(() => es.readyState === EventSource.CLOSED, 'the EventSource gave up')
  assert.equal(failed?.status, 409)
  assert.equal(attempts, 1, 'it did not come back')
  const body = await (await fetch(`${h.url}/v1/sse?channel=tiny:room`, { headers: { authorization: `Bearer ${token()}` } })).json() as { code: string }
  assert.equal(body.code, 'HERALD_ERR_CHANNEL_FULL')

  // Redis gone: the stream opens, says BUS_UNAVAILABLE, and ends with 1012 (come back later).
  await redis.stop('SIGKILL')
  const res = await fetch(`${h.url}/v1/sse?channel=other:room`, { headers: { authorization: `Bearer ${token()}` } })
  assert.equal(res.status, 200)
  const text = await res.text()
  assert.match(text, /"code":"HERALD_ERR_BUS_UNAVAILABLE"/)
  assert.match(text, /"type":"disconnect","code":1012,"reason":"[^"]*","reconnect":true/)
})

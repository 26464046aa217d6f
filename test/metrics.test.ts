import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startHerald, startRedis, redisSkipReason, publish, poll, token, until, WsClient, SseClient } from './helper.js'

/**
 * GET /metrics as Prometheus scrapes it: the text format, read after real traffic.
 */

interface Sample { name: string, labels: Record<string, string>, value: number }

async function scrape (url: string): Promise<{ samples: Sample[], text: string, contentType: string | null }> {
  const res = await fetch(`${url}/metrics`)
  assert.equal(res.status, 200)
  const text = await res.text()
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.ok(m !== null, `unparsable metrics line: ${line}`)
    const labels: Record<string, string> = {}
    if (m[2] !== undefined && m[2] !== '') for (const [, k, v] of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v
    samples.push({ name: m[1], labels, value: Number(m[3]) })
  }
  return { samples, text, contentType: res.headers.get('content-type') }
}

/** The value of the sample with exactly these labels (0 when the series does not exist yet). */
function value (samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.keys(s.labels).length === Object.keys(labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  assert.ok(found.length <= 1, `several samples of ${name} ${JSON.stringify(labels)}`)
  return found[0]?.value ?? 0
}

async function read (url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  return value((await scrape(url)).samples, name, labels)
}

test('the exposition is Prometheus text with HELP and TYPE for every Herald metric', async (t) => {
  const { url } = await startHerald(t)
  const { text, contentType } = await scrape(url)
  assert.match(contentType ?? '', /^text\/plain/)
  for (const [name, type] of [
    ['herald_connections', 'gauge'], ['herald_channels', 'gauge'], ['herald_subscriptions', 'gauge'],
    ['herald_events_published_total', 'counter'], ['herald_events_delivered_total', 'counter'],
    ['herald_delivery_latency_seconds', 'histogram'], ['herald_errors_total', 'counter'],
    ['herald_evictions_total', 'counter'], ['herald_heartbeat_timeouts_total', 'counter'], ['herald_bus_reconnects_total', 'counter'],
    ['herald_bus_catchups_total', 'counter'], ['herald_outbox_bytes', 'gauge'], ['herald_bus_up', 'gauge'], ['herald_ready', 'gauge']
  ]) {
    assert.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), `HELP of ${name}`)
    assert.match(text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), `TYPE of ${name}`)
  }
})

test('herald_connections per transport, herald_channels and herald_subscriptions follow connections as they come and go', async (t) => {
  // No lingering long-poll session: an answered poll leaves nothing behind (one that lingered would stay subscribed).
  const { url, wsUrl } = await startHerald(t, { config: { pollLingerSeconds: 0 } })
  let s = (await scrape(url)).samples
  for (const transport of ['websocket', 'sse', 'long-poll']) assert.equal(value(s, 'herald_connections', { transport }), 0)
  assert.equal(value(s, 'herald_channels'), 0)
  assert.equal(value(s, 'herald_subscriptions'), 0)

  const ws1 = await WsClient.connect(wsUrl)
  const ws2 = await WsClient.connect(wsUrl)
  t.after(() => { ws1.close(); ws2.close() })
  await ws1.subscribe('m:a')
  await ws1.subscribe('m:b')
  await ws2.subscribe('m:a')
  const sse = await SseClient.open(url, ['m:a', 'm:c'])
  t.after(() => sse.close())
  await sse.waitFor(() => sse.messages.filter((m) => m.data.type === 'subscribed').length === 2)
  const first = await poll(url, ['m:d'], { timeout: 0 })
  const waiting = poll(url, ['m:d'], { cursor: first.body.cursor, timeout: 10 })
  await until(async () => await read(url, 'herald_connections', { transport: 'long-poll' }) === 1, 'the waiting long-poll is counted')

  s = (await scrape(url)).samples
  assert.equal(value(s, 'herald_connections', { transport: 'websocket' }), 2)
  assert.equal(value(s, 'herald_connections', { transport: 'sse' }), 1)
  assert.equal(value(s, 'herald_connections', { transport: 'long-poll' }), 1)
  assert.equal(value(s, 'herald_channels'), 4, 'm:a, m:b, m:c, m:d')
  assert.equal(value(s, 'herald_subscriptions'), 6, 'ws1: 2, ws2: 1, sse: 2, poll: 1')

  // The long-poll is answered: it goes.
  assert.equal((await publish(url, 'm:d', { n: 1 })).status, 201)
  assert.equal((await waiting).status, 200)
  await until(async () => await read(url, 'herald_connections', { transport: 'long-poll' }) === 0, 'the answered long-poll is no longer counted')

  // An unsubscribe, a closed socket, an ended stream.
  ws1.send({ type: 'unsubscribe', channel: 'm:b', id: 'u' })
  await ws1.waitFor((f) => f.id === 'u')
  s = (await scrape(url)).samples
  assert.equal(value(s, 'herald_channels'), 2, 'm:a, m:c')
  assert.equal(value(s, 'herald_subscriptions'), 4)
  ws2.close()
  await until(async () => await read(url, 'herald_connections', { transport: 'websocket' }) === 1, 'the closed WebSocket is no longer counted')
  sse.close()
  await until(async () => await read(url, 'herald_connections', { transport: 'sse' }) === 0, 'the ended SSE stream is no longer counted')
  ws1.close()
  await until(async () => await read(url, 'herald_connections', { transport: 'websocket' }) === 0, 'the last WebSocket is no longer counted')
  s = (await scrape(url)).samples
  assert.equal(value(s, 'herald_channels'), 0)
  assert.equal(value(s, 'herald_subscriptions'), 0)
})

test('published and delivered counters and the latency histogram grow with the traffic they count', async (t) => {
  const { url, wsUrl } = await startHerald(t)
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  await ws.subscribe('m:flow')
  const sse = await SseClient.open(url, ['m:flow'])
  t.after(() => sse.close())
  await sse.waitFor((m) => m.data.type === 'subscribed')
  const first = await poll(url, ['m:flow'], { timeout: 0 })

  const s0 = (await scrape(url)).samples
  assert.equal(value(s0, 'herald_events_published_total', { transport: 'rest' }), 0)
  assert.equal(value(s0, 'herald_delivery_latency_seconds_count'), 0)

  // 5 over REST, 2 over the WebSocket, plus one to a channel nobody here subscribes to.
  for (let i = 0; i < 5; i++) assert.equal((await publish(url, 'm:flow', { i })).status, 201)
  ws.send({ type: 'publish', channel: 'm:flow', data: { i: 5 }, id: 'w1' })
  ws.send({ type: 'publish', channel: 'm:flow', data: { i: 6 }, id: 'w2' })
  await ws.waitFor((f) => f.id === 'w2' && f.type === 'ack')
  assert.equal((await publish(url, 'm:elsewhere', { i: 'x' })).status, 201)
  // A retried id is not a new publication.
  ws.send({ type: 'publish', channel: 'm:flow', data: { i: 6 }, id: 'w2' })
  await ws.waitFor((f) => f.id === 'w2' && f.type === 'ack' && f.duplicate === true)
  await ws.events('m:flow', 7)
  await sse.waitEvents('m:flow', 7)
  const polled = await poll(url, ['m:flow'], { cursor: first.body.cursor, timeout: 0 })
  assert.equal(polled.body.events.length, 7)

  const s1 = (await scrape(url)).samples
  assert.equal(value(s1, 'herald_events_published_total', { transport: 'rest' }), 6)
  assert.equal(value(s1, 'herald_events_published_total', { transport: 'websocket' }), 2, 'the duplicate is not counted')
  assert.equal(value(s1, 'herald_events_delivered_total', { transport: 'websocket' }), 7)
  assert.equal(value(s1, 'herald_events_delivered_total', { transport: 'sse' }), 7)
  assert.equal(value(s1, 'herald_events_delivered_total', { transport: 'long-poll' }), 7)
  // One observation per publication dispatched to this node's subscribers (m:elsewhere has none).
  assert.equal(value(s1, 'herald_delivery_latency_seconds_count'), 7)
  assert.equal(value(s1, 'herald_delivery_latency_seconds_bucket', { le: '+Inf' }), 7)
  assert.ok(value(s1, 'herald_delivery_latency_seconds_sum') >= 0)
  const buckets = s1.filter((s) => s.name === 'herald_delivery_latency_seconds_bucket').map((s) => s.value)
  assert.ok(buckets.every((v, i) => i === 0 || v >= buckets[i - 1]), 'cumulative buckets')

  // Counters only grow: a second scrape without traffic reads the same values.
  const s2 = (await scrape(url)).samples
  assert.equal(value(s2, 'herald_events_delivered_total', { transport: 'websocket' }), 7)
  assert.equal(value(s2, 'herald_delivery_latency_seconds_count'), 7)

  // More traffic, more counted.
  assert.equal((await publish(url, 'm:flow', { i: 7 })).status, 201)
  await ws.events('m:flow', 8)
  await sse.waitEvents('m:flow', 8)
  const s3 = (await scrape(url)).samples
  assert.equal(value(s3, 'herald_events_published_total', { transport: 'rest' }), 7)
  assert.equal(value(s3, 'herald_events_delivered_total', { transport: 'websocket' }), 8)
  assert.equal(value(s3, 'herald_events_delivered_total', { transport: 'sse' }), 8)
  assert.equal(value(s3, 'herald_delivery_latency_seconds_count'), 8)
})

test('herald_errors_total counts each refused request and frame by its code', async (t) => {
  const { url, wsUrl } = await startHerald(t)
  const before = (await scrape(url)).samples
  assert.equal(value(before, 'herald_errors_total', { code: 'HERALD_ERR_MALFORMED_JSON' }), 0)

  const malformed = await fetch(`${url}/v1/channels/m:e/events`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token()}` }, body: '{"data":' })
  assert.equal(malformed.status, 400)
  const unauthorized = await publish(url, 'm:e', 1, { token: 'not-a-jwt' })
  assert.equal(unauthorized.status, 401)
  const forbidden = await publish(url, 'm:e', 1, { token: token({ publish: ['other:*'] }) })
  assert.equal(forbidden.status, 403)
  const badChannel = await fetch(`${url}/v1/poll?channel=${encodeURIComponent('bad channel!')}&timeout=0`, { headers: { authorization: `Bearer ${token()}` } })
  assert.equal(badChannel.status, 400)
  const notFound = await fetch(`${url}/v1/nothing-here`)
  assert.equal(notFound.status, 404)
  const ws = await WsClient.connect(wsUrl)
  t.after(() => ws.close())
  ws.send('{not json')
  ws.send({ type: 'unsubscribe', channel: 'm:never', id: 'x' })
  await ws.waitFor((f) => f.id === 'x')

  const after = (await scrape(url)).samples
  const expected: Record<string, number> = {
    HERALD_ERR_MALFORMED_JSON: 2, // REST body and WebSocket frame
    HERALD_ERR_UNAUTHORIZED: 1,
    HERALD_ERR_FORBIDDEN: 1,
    HERALD_ERR_BAD_CHANNEL: 1,
    HERALD_ERR_NOT_FOUND: 1,
    HERALD_ERR_NOT_SUBSCRIBED: 1
  }
  for (const [code, n] of Object.entries(expected)) {
    assert.equal(value(after, 'herald_errors_total', { code }) - value(before, 'herald_errors_total', { code }), n, code)
  }
  // Successful requests count nothing.
  assert.equal((await publish(url, 'm:e', 1)).status, 201)
  const final = (await scrape(url)).samples
  const total = (ss: typeof final): number => ss.filter((x) => x.name === 'herald_errors_total').reduce((a, x) => a + x.value, 0)
  assert.equal(total(final), total(after))
})

test('herald_evictions_total counts a slow consumer evicted with 4001', async (t) => {
  const { app, url, wsUrl } = await startHerald(t, { config: { maxBufferBytes: 16 * 1024, maxBodyBytes: 1024 * 1024 } })
  const reader = await WsClient.connect(wsUrl)
  const slow = await WsClient.connect(wsUrl)
  t.after(() => { reader.close(); slow.socket.terminate() })
  await reader.subscribe('m:slow')
  await slow.subscribe('m:slow')
  assert.equal(await read(url, 'herald_evictions_total', { transport: 'websocket', reason: 'disconnect' }), 0)
  ;(slow.socket as any)._socket.pause()

  // Large events until the node lets go of the client that does not read.
  const big = 'x'.repeat(256 * 1024)
  let sent = 0
  while (app.herald.connections.count('websocket') === 2) {
    assert.ok(sent < 200, `no eviction after ${sent} events of 256 KiB`)
    assert.equal((await publish(url, 'm:slow', { big, n: ++sent })).status, 201)
  }
  ;(slow.socket as any)._socket.resume()
  assert.equal((await slow.waitClosed(3000)).code, 4001)
  const s = (await scrape(url)).samples
  assert.equal(value(s, 'herald_evictions_total', { transport: 'websocket', reason: 'disconnect' }), 1)
  assert.equal(value(s, 'herald_connections', { transport: 'websocket' }), 1)
  await reader.events('m:slow', sent)
  assert.equal(reader.closed, null)
})

test('herald_outbox_bytes counts what waits for a client that does not read, and goes back to 0 once it reads', async (t) => {
  const { url, wsUrl } = await startHerald(t, { config: { maxBufferBytes: 64 * 1024 * 1024, maxBodyBytes: 1024 * 1024 } })
  const slow = await WsClient.connect(wsUrl)
  t.after(() => slow.close())
  await slow.subscribe('m:outbox')
  assert.equal(await read(url, 'herald_outbox_bytes', { transport: 'websocket' }), 0)
  ;(slow.socket as any)._socket.pause()

  // Large events until the kernel's buffers are full and the rest waits in the process.
  const big = 'x'.repeat(256 * 1024)
  let sent = 0
  while (await read(url, 'herald_outbox_bytes', { transport: 'websocket' }) === 0) {
    assert.ok(sent < 200, `nothing waiting after ${sent} events of 256 KiB`)
    assert.equal((await publish(url, 'm:outbox', { big, n: ++sent })).status, 201)
  }
  assert.ok(await read(url, 'herald_outbox_bytes', { transport: 'websocket' }) <= sent * (big.length + 1024))
  assert.equal(await read(url, 'herald_outbox_bytes', { transport: 'sse' }), 0)

  ;(slow.socket as any)._socket.resume()
  await slow.events('m:outbox', sent, 10_000)
  await until(async () => await read(url, 'herald_outbox_bytes', { transport: 'websocket' }) === 0, 'the outbox empties once the client reads')
})

test('herald_bus_up and herald_ready say what /readyz says: bus lost and back, then a drain', { skip: redisSkipReason() }, async (t) => {
  const redis = await startRedis(t)
  const { app, url } = await startHerald(t, { redisUrl: redis.url })
  const ready = async (): Promise<number> => (await fetch(`${url}/readyz`)).status
  let s = (await scrape(url)).samples
  assert.equal(value(s, 'herald_bus_up'), 1)
  assert.equal(value(s, 'herald_ready'), 1)
  assert.equal(await ready(), 200)

  await redis.stop()
  await until(async () => await read(url, 'herald_bus_up') === 0, 'herald_bus_up falls to 0 with Redis gone')
  assert.equal(await read(url, 'herald_ready'), 0)
  assert.equal(await ready(), 503)

  await redis.restart()
  await until(async () => await read(url, 'herald_bus_up') === 1, 'herald_bus_up is back to 1 with Redis', 15_000)
  await until(async () => await read(url, 'herald_ready') === 1, 'herald_ready is back to 1')
  assert.equal(await ready(), 200)

  app.herald.drain()
  s = (await scrape(url)).samples
  assert.equal(value(s, 'herald_ready'), 0, 'a draining node is not ready')
  assert.equal(value(s, 'herald_bus_up'), 1)
  assert.equal(await ready(), 503)
})

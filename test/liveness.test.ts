import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { eachBus, startHerald, publish, token, until, sleep, WsClient, SseClient, type Frame } from './helper.js'
import { withTimeout } from './support/process.js'

/**
 * Liveness: the server's WebSocket heartbeat, the application-level ping, and token expiry and refresh on the
 * WebSocket and SSE. The tests mostly wait (for ping rounds and token expiries), so they run concurrently.
 */

/** Reads one metric sample from GET /metrics (0 when absent). */
async function metric (url: string, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(name + (labels === '' ? ' ' : '{' + labels + '} ')))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

/** A raw `ws` client that does not answer protocol pings (autoPong: false) but records them. */
async function deafClient (t: TestContext, wsUrl: string, sub: string): Promise<{ socket: WebSocket, frames: Frame[], pings: number[], closed: Promise<{ code: number, at: number }> }> {
  const socket = new WebSocket(`${wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${token({ sub })}` }, autoPong: false })
  t.after(() => socket.terminate())
  const frames: Frame[] = []
  const pings: number[] = []
  socket.on('message', (data) => frames.push(JSON.parse(data.toString()) as Frame))
  socket.on('ping', () => pings.push(Date.now()))
  const closed = new Promise<{ code: number, at: number }>((resolve) => socket.once('close', (code) => resolve({ code, at: Date.now() })))
  await new Promise<void>((resolve, reject) => { socket.once('open', () => resolve()); socket.once('error', reject) })
  socket.on('error', () => {})
  return { socket, frames, pings, closed }
}

/**
 * Failure bound for waits on what the server does at a moment it chose (a ping round, a token's exp): how long to
 * wait before calling it a hang, not a claim about how soon it happens.
 */
const HANG_MS = 15_000

/** Waits until the wall clock is past `exp` (seconds) plus `ms`. */
async function pastExpiry (exp: number, ms: number): Promise<void> {
  const left = exp * 1000 + ms - Date.now()
  if (left > 0) await sleep(left)
}

/** The `exp` of a JWT (seconds). */
function expOf (jwt: string): number {
  return (JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()) as { exp: number }).exp
}

describe('liveness', { concurrency: true }, () => {
  // ---------------------------------------------------------------- heartbeat

  test('heartbeat: a client that never answers pings is terminated (after being pinged) and counted; a normal client survives many rounds', async (t) => {
    const { app, url, wsUrl } = await startHerald(t, { config: { wsPingIntervalSeconds: 1 } })
    const normal = await WsClient.connect(wsUrl, { token: token({ sub: 'normal' }) })
    t.after(() => normal.close())
    await normal.subscribe('hb:1')
    let normalPings = 0
    normal.socket.on('ping', () => { normalPings++ })
    assert.equal(normal.frames[0].type, 'connected')
    assert.equal(normal.frames[0].pingInterval, 1)

    const before = await metric(url, 'herald_heartbeat_timeouts_total')
    assert.equal(before, 0)
    const deaf = await deafClient(t, wsUrl, 'deaf')
    assert.equal(app.herald.connections.count('websocket'), 2)

    // Pinged at the next round, terminated at the one after: wait for the termination itself (HANG_MS only
    // bounds the wait). Nothing else ends this socket: the client never closes it, and its token lasts an hour.
    const closed = await withTimeout(deaf.closed, HANG_MS, 'the server to terminate a client that never answers pings')
    assert.equal(closed.code, 1006, 'terminated (no close handshake with a dead peer)')
    assert.ok(deaf.pings.length >= 1, 'it was pinged before being terminated')
    await until(() => app.herald.connections.count('websocket') === 1, 'the terminated socket is forgotten')
    assert.equal(await metric(url, 'herald_heartbeat_timeouts_total'), 1)

    // The normal client answers pings by itself and is kept through several more rounds: each ping it gets means
    // it passed the liveness check of that round (a round checks before it pings). Wait for three more rounds.
    const pingsAtTermination = normalPings
    await until(() => normalPings >= pingsAtTermination + 3 || normal.closed !== null, 'three more ping rounds for the normal client', HANG_MS)
    assert.equal(normal.closed, null)
    assert.ok(normalPings >= 3, `the normal client was pinged ${normalPings} times`)
    assert.equal(await metric(url, 'herald_heartbeat_timeouts_total'), 1, 'no other socket timed out')
    assert.equal((await publish(url, 'hb:1', { still: 'here' })).status, 201)
    assert.deepEqual((await normal.events('hb:1', 1)).map((e) => e.data), [{ still: 'here' }])
  })

  test('heartbeat under churn: sockets that came and went leave no trace in the ping rounds; those that stay are pinged, and a deaf one among them is still cut', async (t) => {
    const { app, url, wsUrl } = await startHerald(t, { config: { wsPingIntervalSeconds: 1 } })
    const stays = await WsClient.connect(wsUrl, { token: token({ sub: 'stays' }) })
    t.after(() => stays.close())
    let pings = 0
    stays.socket.on('ping', () => { pings++ })
    // Four waves of 20 sockets open and go (80, within CONNECT_BURST), half closed with a handshake and half cut:
    // each joined a slice of the heartbeat and must have left it. One left behind would be pinged while closed, then
    // counted as a timeout.
    const open = async (sub: string): Promise<WebSocket> => {
      const socket = new WebSocket(`${wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${token({ sub })}` } })
      socket.on('error', () => {})
      t.after(() => socket.terminate())
      await new Promise<void>((resolve, reject) => { socket.once('open', () => resolve()); socket.once('close', () => reject(new Error(sub + ' closed before it opened'))) })
      return socket
    }
    for (let wave = 0; wave < 4; wave++) {
      const sockets = await Promise.all(Array.from({ length: 20 }, async (_, i) => await open(`churn-${wave}-${i}`)))
      sockets.forEach((s, i) => { if (i % 2 === 0) s.close(1000); else s.terminate() })
      await until(() => app.herald.connections.count('websocket') === 1, `wave ${wave}'s sockets to be gone`, HANG_MS)
    }
    const deaf = await deafClient(t, wsUrl, 'deaf-after-churn')
    const closed = await withTimeout(deaf.closed, HANG_MS, 'the server to terminate a client that never answers pings')
    assert.equal(closed.code, 1006)
    assert.ok(deaf.pings.length >= 1, 'it was pinged before being terminated')
    // Three more rounds for the socket that stayed: every slice has come round several times since the churn.
    const before = pings
    await until(() => pings >= before + 3 || stays.closed !== null, 'three more ping rounds for the socket that stayed', HANG_MS)
    assert.equal(stays.closed, null)
    assert.equal(await metric(url, 'herald_heartbeat_timeouts_total'), 1, 'only the deaf socket timed out: none of the 80 that left was pinged')
    assert.equal(app.herald.connections.count('websocket'), 1)
  })

  test('application ping: a ping frame is answered by a pong with the same id (and one without id by a pong without)', async (t) => {
    const { wsUrl } = await startHerald(t)
    const ws = await WsClient.connect(wsUrl)
    t.after(() => ws.close())
    ws.send({ type: 'ping', id: 'p-1' })
    ws.send({ type: 'ping', id: 'p-2' })
    const p1 = await ws.waitFor((f) => f.type === 'pong' && f.id === 'p-1')
    const p2 = await ws.waitFor((f) => f.type === 'pong' && f.id === 'p-2')
    assert.deepEqual(p1, { type: 'pong', id: 'p-1' })
    assert.deepEqual(p2, { type: 'pong', id: 'p-2' })
    const from = ws.frames.length
    ws.send({ type: 'ping' })
    const bare = await ws.waitFor((f) => f.type === 'pong', 5000, from)
    assert.equal(bare.id, undefined)
    assert.equal(ws.frames.filter((f) => f.type === 'ack').length, 0, 'a ping is answered by a pong, not an ack')
  })

  // ---------------------------------------------------------------- token expiry

  test('token expiry: a WebSocket whose token expires is closed with 4501 at the expiry, not before', async (t) => {
    const { app, wsUrl } = await startHerald(t)
    const tok = token({ sub: 'exp-ws' }, { expiresInMs: 2500 })
    const exp = expOf(tok)
    const ws = await WsClient.connect(wsUrl, { token: tok })
    t.after(() => ws.close())
    await ws.subscribe('exp:1')
    const closed = await ws.waitClosed(HANG_MS)
    const at = Date.now()
    assert.equal(closed.code, 4501)
    assert.match(closed.reason, /expired/)
    assert.ok(at >= exp * 1000 - 50, `closed ${exp * 1000 - at} ms before the token's exp`)
    assert.equal(app.herald.connections.count('websocket'), 0)
  })

  test('token expiry, several connections (one timer for all): each closes with 4501 at its own exp, in exp order; one gone before is forgotten', async (t) => {
    const { app, wsUrl } = await startHerald(t)
    const toks = [1500, 2500, 1500, 3500].map((ms, i) => token({ sub: `exp-${i}` }, { expiresInMs: ms }))
    const clients = await Promise.all(toks.map(async (tok) => await WsClient.connect(wsUrl, { token: tok })))
    t.after(() => { for (const c of clients) c.close() })
    // The third leaves before its token expires: its entry must go with it.
    clients[2].close()
    const order: number[] = []
    const closes = await Promise.all([0, 1, 3].map(async (i) => {
      const closed = await clients[i].waitClosed(HANG_MS)
      order.push(i)
      return { i, code: closed.code, at: Date.now() }
    }))
    for (const c of closes) {
      assert.equal(c.code, 4501, `connection ${c.i}`)
      assert.ok(c.at >= expOf(toks[c.i]) * 1000 - 50, `connection ${c.i} closed ${expOf(toks[c.i]) * 1000 - c.at} ms before its exp`)
    }
    // The tokens' exps are whole seconds 1 s apart (1.5, 2.5, 3.5 s from now): the closes come in that order.
    assert.ok(expOf(toks[0]) < expOf(toks[1]) && expOf(toks[1]) < expOf(toks[3]))
    assert.deepEqual(order, [0, 1, 3])
    await until(() => app.herald.connections.count('websocket') === 0, 'every connection gone')
  })

  eachBus('token refresh: a refreshed WebSocket lives past the old expiry and keeps its subscriptions', async (t, bus) => {
    const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl })
    const old = token({ sub: 'refresher' }, { expiresInMs: 2500 })
    const oldExp = expOf(old)
    const ws = await WsClient.connect(wsUrl, { token: old })
    t.after(() => ws.close())
    // A control connection on the old token, never refreshed: its 4501 close is the server acting on that exp.
    const control = await WsClient.connect(wsUrl, { token: old })
    t.after(() => control.close())
    await ws.subscribe('ref:1')
    assert.equal((await publish(url, 'ref:1', { n: 1 })).status, 201)
    await ws.events('ref:1', 1)

    const fresh = token({ sub: 'refresher' }, { expiresInMs: 3600_000 })
    ws.send({ type: 'refresh', token: fresh, id: 'r1' })
    const ack = await ws.waitFor((f) => f.id === 'r1')
    assert.equal(ack.type, 'ack', JSON.stringify(ack))
    assert.equal(ack.exp, expOf(fresh))

    // Once the control is closed for expiry, the old token's deadline has been enforced; the extra second past
    // exp covers the order in which the node's timers for the same instant fire.
    assert.equal((await control.waitClosed(HANG_MS)).code, 4501, 'the old token expires on a connection that did not refresh')
    await pastExpiry(oldExp, 1000)
    assert.equal(ws.closed, null, 'the refreshed connection outlived the old token')
    assert.equal((await publish(url, 'ref:1', { n: 2 })).status, 201)
    const events = await ws.events('ref:1', 2)
    assert.deepEqual(events.map((e) => [e.offset, e.data.n]), [[1, 1], [2, 2]], 'the subscription went on without a gap')
    assert.equal(ws.frames.filter((f) => f.type === 'unsubscribed').length, 0)
    ws.send({ type: 'ping', id: 'after' })
    await ws.waitFor((f) => f.type === 'pong' && f.id === 'after')
  })

  test('token refresh with another sub is refused (UNAUTHORIZED) and does not extend the connection', async (t) => {
    const { wsUrl } = await startHerald(t)
    const tok = token({ sub: 'mallory-1' }, { expiresInMs: 2500 })
    const exp = expOf(tok)
    const ws = await WsClient.connect(wsUrl, { token: tok })
    t.after(() => ws.close())
    await ws.subscribe('ref:2')
    ws.send({ type: 'refresh', token: token({ sub: 'mallory-2' }, { expiresInMs: 3600_000 }), id: 'other-sub' })
    const err = await ws.waitFor((f) => f.id === 'other-sub')
    assert.equal(err.type, 'error')
    assert.equal(err.code, 'HERALD_ERR_UNAUTHORIZED')
    assert.match(err.message, /same sub/)
    // An invalid token is refused the same way.
    ws.send({ type: 'refresh', token: token({ sub: 'mallory-1' }, { key: 'another-secret-0123456789abcdef' }), id: 'bad-sig' })
    assert.equal((await ws.waitFor((f) => f.id === 'bad-sig')).code, 'HERALD_ERR_UNAUTHORIZED')
    // The connection keeps working until its own token expires, then closes with 4501.
    ws.send({ type: 'ping', id: 'still' })
    await ws.waitFor((f) => f.type === 'pong' && f.id === 'still')
    const closed = await ws.waitClosed(HANG_MS)
    assert.equal(closed.code, 4501)
    assert.ok(Date.now() >= exp * 1000 - 50)
  })

  eachBus('token refresh dropping a permission ends that subscription with reason forbidden; the others continue', async (t, bus) => {
    const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl })
    const ws = await WsClient.connect(wsUrl, { token: token({ sub: 'narrowed', subscribe: ['a:*', 'b:*'] }) })
    t.after(() => ws.close())
    await ws.subscribe('a:1')
    await ws.subscribe('b:1')
    ws.send({ type: 'refresh', token: token({ sub: 'narrowed', subscribe: ['a:*'] }), id: 'narrow' })
    const unsub = await ws.waitFor((f) => f.type === 'unsubscribed')
    assert.deepEqual(unsub, { type: 'unsubscribed', channel: 'b:1', reason: 'forbidden' })
    assert.equal((await ws.waitFor((f) => f.id === 'narrow')).type, 'ack')
    assert.equal(ws.frames.filter((f) => f.type === 'unsubscribed').length, 1, 'only the channel no longer allowed')

    // b:1 no longer delivers; a:1 does. b is published first and the node delivers in publish order, so a:1's
    // event is the barrier: had b:1's been delivered, it would have arrived before it.
    assert.equal((await publish(url, 'b:1', { n: 'b' })).status, 201)
    assert.equal((await publish(url, 'a:1', { n: 'a' })).status, 201)
    await ws.events('a:1', 1)
    assert.equal(ws.frames.filter((f) => f.type === 'event' && f.channel === 'b:1').length, 0)
    // Subscribing again is refused under the new token.
    await assert.rejects(ws.subscribe('b:1'), (err: { frame?: Frame }) => err.frame?.code === 'HERALD_ERR_FORBIDDEN')
    assert.equal(ws.closed, null)
  })

  test('token expiry on SSE: the stream ends with a disconnect frame 4501 (reconnect: false) at the expiry', async (t) => {
    const { app, url } = await startHerald(t)
    const tok = token({ sub: 'exp-sse' }, { expiresInMs: 2500 })
    const exp = expOf(tok)
    const sse = await SseClient.open(url, ['exp:sse'], { token: tok })
    t.after(() => sse.close())
    await sse.waitFor((m) => m.data.type === 'subscribed')
    assert.equal((await publish(url, 'exp:sse', { n: 1 })).status, 201)
    await sse.waitEvents('exp:sse', 1)
    const disconnect = await sse.waitFor((m) => m.data.type === 'disconnect', HANG_MS)
    const at = Date.now()
    assert.equal(disconnect.data.code, 4501)
    assert.equal(disconnect.data.reconnect, false, '4501 is terminal: get a new token first')
    assert.match(disconnect.data.reason, /expired/)
    assert.ok(at >= exp * 1000 - 50, 'not before the expiry')
    await until(() => sse.ended, 'the stream ends after the disconnect frame', 3000)
    assert.equal(sse.messages[sse.messages.length - 1].data.type, 'disconnect', 'the disconnect frame is the last message')
    assert.equal(app.herald.connections.count('sse'), 0)
  })
})

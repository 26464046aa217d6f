import assert from 'node:assert/strict'
import WS from 'ws'
import { createClient, type HeraldEvent, type WebSocketConstructor } from '../client/index.js'
import { eachBus, poll, SseClient, startHerald, token, until, WsClient, type Frame } from './helper.js'

// Latest-value channels (namespace option `latest`) and versioned publishes, on both buses, with real clients on
// every transport: a subscriber without a position gets the latest value first; a late, lower version never
// overwrites a newer one.

const NAMESPACES = { namespaces: { price: { latest: true }, plain: {} }, unknown: 'refuse' as const }

async function rest (base: string, channel: string, body: unknown): Promise<{ status: number, body: any }> {
  const res = await fetch(`${base}/v1/channels/${encodeURIComponent(channel)}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token() },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
  return { status: res.status, body: await res.json() }
}

eachBus('latest-value: a new subscriber gets the latest event first on every transport; a resume gets what it missed', async (t, bus) => {
  const h = await startHerald(t, { redisUrl: bus.redisUrl, config: { namespaces: NAMESPACES } })
  // Nothing published yet: a subscriber simply waits.
  const early = await WsClient.connect(h.wsUrl)
  const none = await early.subscribe('price:eur')
  assert.equal(none.replayed, 0)
  for (let v = 1; v <= 3; v++) assert.equal((await rest(h.url, 'price:eur', { data: { eur: 1 + v / 10 }, version: v })).status, 201)
  await early.events('price:eur', 3)

  const ws = await WsClient.connect(h.wsUrl)
  const subscribed = await ws.subscribe('price:eur')
  assert.equal(subscribed.replayed, 1)
  assert.equal(subscribed.recovered, undefined, 'not a resume: no recovery to report')
  const [latest] = await ws.events('price:eur', 1)
  assert.deepEqual(latest.data, { eur: 1.3 })
  assert.equal(latest.offset, 3)

  const sse = await SseClient.open(h.url, ['price:eur'])
  assert.deepEqual((await sse.waitEvents('price:eur', 1)).map((e) => e.data), [{ eur: 1.3 }])
  const polled = await poll(h.url, ['price:eur'], { timeout: 0 })
  assert.deepEqual(polled.body.events.map((e: Frame) => e.data), [{ eur: 1.3 }])

  // A plain channel stays as it was: a new subscriber starts with the next event.
  await rest(h.url, 'plain:x', { data: 'old' })
  const plain = await ws.subscribe('plain:x')
  assert.equal(plain.replayed, 0)

  // Live updates follow the latest, each once; a resume from the first position replays the rest.
  await rest(h.url, 'price:eur', { data: { eur: 1.4 }, version: 4 })
  assert.deepEqual((await ws.events('price:eur', 2)).map((e) => e.data), [{ eur: 1.3 }, { eur: 1.4 }])
  const back = await WsClient.connect(h.wsUrl)
  const resumed = await back.subscribe('price:eur', { offset: latest.offset, epoch: latest.epoch })
  assert.equal(resumed.recovered, true)
  assert.deepEqual((await back.events('price:eur', 1)).map((e) => e.data), [{ eur: 1.4 }])
  for (const c of [early, ws, back]) c.close()
  sse.close()
})

eachBus('versioned publishes: at or below the last version is dropped (stale), never stored or delivered; REST, WebSocket and the client agree', async (t, bus) => {
  const h = await startHerald(t, { redisUrl: bus.redisUrl, config: { namespaces: NAMESPACES } })
  const reader = await WsClient.connect(h.wsUrl)
  await reader.subscribe('price:btc')
  const first = await rest(h.url, 'price:btc', { data: 100, version: 10 })
  assert.equal(first.status, 201)
  // A late retry of an older value, and a repeat of the current one: both stale, answered with the channel's top.
  for (const version of [9, 10, 0]) {
    const late = await rest(h.url, 'price:btc', { data: 90, version })
    assert.equal(late.status, 200, String(version))
    assert.deepEqual(late.body, { channel: 'price:btc', offset: first.body.offset, epoch: first.body.epoch, duplicate: false, stale: true })
  }
  // Unversioned publishes are not compared, and leave the version as it was.
  assert.equal((await rest(h.url, 'price:btc', { data: 'note' })).status, 201)
  assert.equal((await rest(h.url, 'price:btc', { data: 95, version: 10 })).body.stale, true)
  // Over the WebSocket.
  const writer = await WsClient.connect(h.wsUrl)
  writer.send({ type: 'publish', channel: 'price:btc', data: 80, version: 8, id: 'w1' })
  const staleAck = await writer.waitFor((f) => f.type === 'ack' && f.id === 'w1')
  assert.equal(staleAck.stale, true)
  writer.send({ type: 'publish', channel: 'price:btc', data: 120, version: 12, id: 'w2' })
  assert.equal((await writer.waitFor((f) => f.type === 'ack' && f.id === 'w2')).stale, undefined)
  // The client library.
  const c = createClient({ url: h.url, token: token(), WebSocket: WS as unknown as WebSocketConstructor })
  t.after(() => c.close())
  const ack = await c.publish('price:btc', 110, { version: 11 })
  assert.equal(ack.stale, true)
  const ok = await c.publish('price:btc', 130, { version: 13 })
  assert.equal(ok.stale, undefined)
  // What subscribers saw, and what history holds: only the accepted ones, in order.
  await reader.events('price:btc', 4)
  assert.deepEqual(reader.frames.filter((f) => f.type === 'event').map((f) => f.data), [100, 'note', 120, 130])
  const history = await (await fetch(`${h.url}/v1/channels/price:btc/events?since=0`, { headers: { authorization: 'Bearer ' + token() } })).json() as { events: Frame[] }
  assert.deepEqual(history.events.map((e) => e.data), [100, 'note', 120, 130])
  // An idempotent retry of a stale publish is stale again (nothing was stored under its id).
  assert.equal((await rest(h.url, 'price:btc', { data: 1, version: 2, id: 'again' })).body.stale, true)
  assert.equal((await rest(h.url, 'price:btc', { data: 1, version: 2, id: 'again' })).body.stale, true)
  reader.close()
  writer.close()
})

eachBus('versions: hostile values are refused with a clear error, never stored or crashing', async (t, bus) => {
  const h = await startHerald(t, { redisUrl: bus.redisUrl, config: { namespaces: NAMESPACES } })
  for (const version of [-1, 1.5, '3', 2 ** 60, null, [1], { __proto__: { x: 1 } }, 'NaN']) {
    const answer = await rest(h.url, 'price:x', { data: 1, version })
    assert.equal(answer.status, 400, JSON.stringify(version))
    assert.equal(answer.body.code, 'HERALD_ERR_VALIDATION')
  }
  const ws = await WsClient.connect(h.wsUrl)
  ws.send({ type: 'publish', channel: 'price:x', data: 1, version: -5, id: 'bad' })
  assert.equal((await ws.waitFor((f) => f.type === 'error' && f.id === 'bad')).code, 'HERALD_ERR_BAD_FRAME')
  ws.send('{"type":"publish","channel":"price:x","data":1,"version":1e400,"id":"inf"}')
  await ws.waitFor((f) => f.type === 'error' && f.id === 'inf')
  // The largest exact whole number is fine, and nothing after it passes.
  assert.equal((await rest(h.url, 'price:x', { data: 1, version: Number.MAX_SAFE_INTEGER })).status, 201)
  assert.equal((await rest(h.url, 'price:x', { data: 2, version: Number.MAX_SAFE_INTEGER })).body.stale, true)
  const seen: HeraldEvent[] = []
  const c = createClient({ url: h.url, token: token(), WebSocket: WS as unknown as WebSocketConstructor })
  t.after(() => c.close())
  c.subscribe('price:x').on('event', (e) => seen.push(e))
  await until(() => seen.length === 1, 'the latest value')
  assert.deepEqual(seen.map((e) => e.data), [1])
  ws.close()
})

/**
 * Bytes per delivery with and without delta delivery, on a scenario of large, slowly changing documents: a board of
 * ROWS rows (about 10 KB of JSON) of which one row's price changes per update, UPDATES updates, WebSocket and SSE
 * subscribers on loopback, one asking for deltas and one not, per transport. Counts the bytes each client receives
 * (WebSocket message payloads; SSE stream bytes) and checks that the delta subscriber's client library rebuilt every
 * document exactly. `npm run bench:delta` (about 10 s); figures go into docs/benchmarks.md by hand.
 */
import Fastify from 'fastify'
import WS from 'ws'
import { createSigner } from 'fast-jwt'
import herald from '../src/app.js'
import { createClient, type HeraldEvent, type WebSocketConstructor } from '../client/index.js'

const ROWS = 80
const UPDATES = Number(process.argv[2] ?? 300)
const SECRET = 'bench-secret-0123456789abcdef'
const token = createSigner({ key: SECRET, expiresIn: 3600_000 })({ sub: 'bench', subscribe: ['*'], publish: ['*'] })

function board (n: number): Record<string, unknown> {
  const rows = Array.from({ length: ROWS }, (_, i) => ({ id: i, name: `instrument ${i}`, price: 100 + i, currency: 'EUR', note: 'listed on the main market' }))
  rows[n % ROWS].price = 1000 + n
  return { seq: n, title: 'Prices', rows }
}

const app = Fastify()
await app.register(herald, { defaultMetrics: false, config: { jwt: { secret: SECRET, algorithms: ['HS256'] }, namespaces: { namespaces: { board: { delta: true } } } } })
await app.listen({ port: 0, host: '127.0.0.1' })
const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`

/** A raw WebSocket subscriber counting the payload bytes of its event messages. */
async function wsSubscriber (delta: boolean): Promise<{ bytes: () => number, events: () => number }> {
  const socket = new WS(base.replace('http', 'ws') + '/v1/ws', { headers: { authorization: 'Bearer ' + token } })
  let bytes = 0
  let events = 0
  socket.on('message', (data: Buffer) => {
    const text = data.toString()
    if (!text.startsWith('{"type":"event"')) return
    bytes += data.length
    events++
  })
  await new Promise((resolve) => socket.once('open', resolve))
  socket.send(JSON.stringify({ type: 'subscribe', channel: 'board:eu', delta, id: 's' }))
  await new Promise<void>((resolve) => socket.on('message', (d: Buffer) => { if (d.toString().includes('"type":"ack"')) resolve() }))
  return { bytes: () => bytes, events: () => events }
}

/** An SSE subscriber counting every byte of its stream after it opened. */
async function sseSubscriber (delta: boolean): Promise<{ bytes: () => number, events: () => number }> {
  const pairs: Array<[string, string]> = [['channel', 'board:eu'], ...(delta ? [['delta', 'board:eu'] as [string, string]] : [])]
  const qs = new URLSearchParams(pairs)
  const res = await fetch(`${base}/v1/sse?${qs.toString()}`, { headers: { authorization: 'Bearer ' + token, accept: 'text/event-stream' } })
  let bytes = 0
  let events = 0
  let opened = false
  const ready = new Promise<void>((resolve) => {
    void (async () => {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        const text = Buffer.from(chunk).toString()
        if (!opened) { if (text.includes('"type":"subscribed"')) { opened = true; resolve() } continue }
        bytes += chunk.byteLength
        events += text.split('"type":"event"').length - 1
      }
    })().catch(() => {})
  })
  await ready
  return { bytes: () => bytes, events: () => events }
}

const subscribers = {
  'WebSocket, whole events': await wsSubscriber(false),
  'WebSocket, delta': await wsSubscriber(true),
  'SSE, whole events': await sseSubscriber(false),
  'SSE, delta': await sseSubscriber(true)
}
const seen: HeraldEvent[] = []
const client = createClient({ url: base, token, WebSocket: WS as unknown as WebSocketConstructor, transports: ['websocket'] })
const sub = client.subscribe('board:eu', { delta: true })
sub.on('event', (e) => seen.push(e))
await new Promise((resolve) => sub.once('subscribed', resolve))

const documentBytes: number[] = []
for (let n = 1; n <= UPDATES; n++) {
  const doc = board(n)
  documentBytes.push(JSON.stringify(doc).length)
  const res = await fetch(`${base}/v1/channels/board:eu/events`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token }, body: JSON.stringify({ data: doc }) })
  if (res.status !== 201) throw new Error(`publish ${n}: ${res.status}`)
}
const deadline = Date.now() + 30_000
while ((Object.values(subscribers).some((s) => s.events() < UPDATES) || seen.length < UPDATES) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
let exact = seen.length === UPDATES
for (let i = 0; i < seen.length && exact; i++) exact = JSON.stringify(seen[i].data) === JSON.stringify(board(i + 1))

const avgDoc = documentBytes.reduce((a, b) => a + b, 0) / documentBytes.length
console.log(`${UPDATES} updates of a ${ROWS}-row document (${Math.round(avgDoc)} bytes of JSON each), one row changed per update`)
console.log('| subscriber | events | bytes per delivery | vs whole |')
console.log('|---|---|---|---|')
for (const [name, s] of Object.entries(subscribers)) {
  const whole = name.startsWith('SSE') ? subscribers['SSE, whole events'] : subscribers['WebSocket, whole events']
  console.log(`| ${name} | ${s.events()} | ${Math.round(s.bytes() / s.events())} | ${(s.bytes() / whole.bytes()).toFixed(3)}× |`)
}
console.log(`client library (WebSocket, delta) rebuilt ${seen.length} documents, all exact: ${String(exact)}`)
client.close()
await app.close()
process.exit(exact ? 0 : 1)

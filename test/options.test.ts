import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'
import { Namespaces, loadNamespacesFile } from '../src/namespaces.js'
import { ConfigError } from '../src/config.js'
import { eachBus, startHerald, publish, token, WsClient } from './helper.js'

function tempFile (t: { after: (fn: () => void) => void }, name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'herald-ns-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

test('a namespaces file in YAML or JSON resolves per namespace, over the defaults', (t) => {
  const yaml = tempFile(t, 'ns.yaml', [
    'defaults:', '  historySize: 50', 'namespaces:', '  chat:', '    presence: true', '    joinLeave: true',
    '  metrics:', '    backpressure: coalesce', '    coalesceKey: key', 'unknown: refuse', ''
  ].join('\n'))
  const json = tempFile(t, 'ns.json', JSON.stringify({ namespaces: { chat: { maxMembers: 3 } } }))
  for (const path of [yaml, json]) {
    const ns = new Namespaces(loadNamespacesFile(path), { historySize: 1000, historyTtl: 3600 })
    const chat = ns.of('chat:lobby')
    assert.ok(chat !== undefined)
    assert.equal(chat.backpressure, 'disconnect')
    assert.equal(chat.historyTtl, 3600)
    if (path === yaml) {
      assert.equal(chat.presence, true)
      assert.equal(chat.historySize, 50, 'defaults of the file apply to listed namespaces')
      assert.equal(ns.of('metrics:cpu')?.backpressure, 'coalesce')
      assert.equal(ns.of('other:x'), undefined, 'unknown: refuse')
      assert.ok(ns.anyPresence)
    } else {
      assert.equal(chat.maxMembers, 3)
      assert.equal(ns.of('other:x')?.historySize, 1000, 'unlisted namespaces take the defaults')
      assert.ok(!ns.anyPresence)
    }
  }
})

test('a bad namespaces file stops start-up with a message naming the problem', (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['bad.json', '{ not json', /not valid JSON/],
    ['bad.yaml', 'a: [1, 2', /not valid YAML/],
    ['typo.json', JSON.stringify({ namespaces: { chat: { presense: true } } }), /NAMESPACES_FILE \/namespaces\/chat/],
    ['policy.json', JSON.stringify({ namespaces: { chat: { backpressure: 'explode' } } }), /backpressure/],
    ['coalesce.json', JSON.stringify({ namespaces: { dash: { backpressure: 'coalesce' } } }), /coalesceKey/]
  ]
  for (const [name, text, message] of cases) {
    const path = tempFile(t, name, text)
    assert.throws(() => loadNamespacesFile(path), (err: unknown) => err instanceof ConfigError && message.test(err.message), name)
  }
  assert.throws(() => loadNamespacesFile('/nonexistent/ns.json'), /cannot read it/)
})

eachBus('permessage-deflate when enabled: compressed sockets get every event (and skip the pre-built frames)', async (t, bus) => {
  const { url, wsUrl } = await startHerald(t, { redisUrl: bus.redisUrl, config: { ws: { compression: true, compressionThreshold: 64, acceptBinary: false } } })
  const socket = new WebSocket(`${wsUrl}/v1/ws?token=${token()}`, { perMessageDeflate: true })
  t.after(() => socket.close())
  const frames: any[] = []
  socket.on('message', (data) => frames.push(JSON.parse(data.toString())))
  await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
  assert.match(socket.extensions, /permessage-deflate/)
  socket.send(JSON.stringify({ type: 'subscribe', channel: 'z', id: '1' }))
  const plain = await WsClient.connect(wsUrl)
  t.after(() => plain.close())
  await plain.subscribe('z')
  while (!frames.some((f) => f.type === 'ack')) await new Promise((resolve) => setTimeout(resolve, 10))
  const payloads = ['small', 'y'.repeat(5000)]
  for (const p of payloads) assert.equal((await publish(url, 'z', p)).status, 201)
  await plain.events('z', 2)
  const deadline = Date.now() + 5000
  while (frames.filter((f) => f.type === 'event').length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  assert.deepEqual(frames.filter((f) => f.type === 'event').map((f) => f.data), payloads)
  assert.deepEqual((await plain.events('z', 2)).map((f) => f.data), payloads)
})

test('binary frames: refused by default, parsed as UTF-8 JSON with WS_ACCEPT_BINARY', async (t) => {
  for (const acceptBinary of [false, true]) {
    const { wsUrl } = await startHerald(t, { config: { ws: { compression: false, compressionThreshold: 1024, acceptBinary } } })
    const ws = await WsClient.connect(wsUrl)
    t.after(() => ws.close())
    ws.socket.send(Buffer.from(JSON.stringify({ type: 'ping', id: 'b' })), { binary: true })
    const reply = await ws.waitFor((f) => f.id === 'b' || f.type === 'error')
    if (acceptBinary) assert.deepEqual(reply, { type: 'pong', id: 'b' })
    else assert.equal(reply.code, 'HERALD_ERR_BAD_FRAME')
  }
})

test('an idle SSE stream carries heartbeat comments', { timeout: 30_000 }, async (t) => {
  const { url } = await startHerald(t, { config: { sseHeartbeatSeconds: 1 } })
  const controller = new AbortController()
  t.after(() => controller.abort())
  const res = await fetch(`${url}/v1/sse?channel=quiet&token=${token()}`, { signal: controller.signal })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/)
  let text = ''
  const decoder = new TextDecoder()
  const started = Date.now()
  // Read until two heartbeats came: only the test's own timeout bounds the wait (a failure bound).
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    text += decoder.decode(chunk, { stream: true })
    if ((text.match(/^: hb$/gm) ?? []).length >= 2) break
  }
  assert.ok((text.match(/^: hb$/gm) ?? []).length >= 2, 'two heartbeats: ' + JSON.stringify(text))
  assert.ok(Date.now() - started >= 900, 'heartbeats are paced by SSE_HEARTBEAT, not sent back to back')
})

test('a busy SSE stream carries no heartbeat comments: its events keep it alive; once they stop, heartbeats resume', { timeout: 30_000 }, async (t) => {
  const { url } = await startHerald(t, { config: { sseHeartbeatSeconds: 1 } })
  const controller = new AbortController()
  t.after(() => controller.abort())
  const res = await fetch(`${url}/v1/sse?channel=busy&token=${token()}`, { signal: controller.signal })
  assert.equal(res.status, 200)
  let text = ''
  const decoder = new TextDecoder()
  const chunks = (res.body as unknown as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
  // Reads until `done` holds for what came so far (only the test's own timeout bounds the wait).
  const readUntil = async (done: () => boolean): Promise<void> => {
    while (!done()) {
      const next = await chunks.next()
      if (next.done === true) throw new Error('stream ended: ' + JSON.stringify(text))
      text += decoder.decode(next.value, { stream: true })
    }
  }
  const reading = readUntil(() => text.includes('"last":true'))
  // An event every 100 ms for three heartbeat periods (30 events), then a last one.
  for (let i = 1; i <= 30; i++) {
    assert.equal((await publish(url, 'busy', { i })).status, 201)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.equal((await publish(url, 'busy', { last: true })).status, 201)
  await reading
  assert.equal((text.match(/^data: .*"type":"event"/gm) ?? []).length, 31, 'every event')
  // An idle stream gets one every second (the test above); a stream that wrote within the last half second gets
  // none. One may slip in only if this process stalled for half a second between two events.
  assert.ok((text.match(/^: hb$/gm) ?? []).length <= 1, 'heartbeats on a busy stream: ' + JSON.stringify(text.match(/^: hb$/gm)))
  // The events stopped: the stream goes quiet, and its heartbeat comes back.
  const afterLast = text.length
  await readUntil(() => /^: hb$/m.test(text.slice(afterLast)))
})

test('the dev-only token route exists when the host asks for it and not in production; the client bundle is served', async (t) => {
  const dev = await startHerald(t, { config: { devToken: true } })
  const res = await fetch(`${dev.url}/dev/token?sub=zoe`)
  assert.equal(res.status, 200)
  const body = await res.json() as { token: string, sub: string }
  assert.equal(body.sub, 'zoe')
  const who = await fetch(`${dev.url}/v1/whoami`, { headers: { authorization: `Bearer ${body.token}` } })
  assert.equal(who.status, 200)
  assert.equal((await who.json() as { sub: string }).sub, 'zoe')
  const bundle = await fetch(`${dev.url}/client/herald.js`)
  assert.equal(bundle.status, 200)
  assert.match(bundle.headers.get('content-type') ?? '', /javascript/)
  assert.match(await bundle.text(), /createClient/)

  const prod = await startHerald(t, { config: { production: true, devToken: true } })
  const refused = await fetch(`${prod.url}/dev/token?sub=zoe`)
  assert.equal(refused.status, 404)
  assert.equal((await refused.json() as { code: string }).code, 'HERALD_ERR_NOT_FOUND')
})

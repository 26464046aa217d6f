import { test } from 'node:test'
import assert from 'node:assert/strict'
import { publish, startHerald, token, WsClient } from '../helper.js'
import { cleanup, startServer } from '../support/process.js'

// One frame nested thousands deep used to crash the whole node (a RangeError thrown while describing it).
// Every attack here runs against a real server on a real socket; the node must answer it with an error frame
// or an HTTP error, and keep serving everybody else.

const deep = (n: number, inner = '1'): string => '['.repeat(n) + inner + ']'.repeat(n)

const ATTACKS: Array<[string, string]> = [
  ['subscribe whose channel is arrays nested 5,000 deep', '{"type":"subscribe","channel":' + deep(5000) + ',"id":"a1"}'],
  ['publish whose data is nested 5,000 deep', '{"type":"publish","channel":"room","data":' + deep(5000) + ',"id":"a2"}'],
  ['unknown type nested 5,000 deep', '{"type":' + deep(5000) + ',"id":"a3"}'],
  ['since nested 5,000 deep', '{"type":"subscribe","channel":"room","since":' + deep(5000, '{}') + ',"id":"a4"}'],
  ['objects nested 5,000 deep', '{"type":"publish","channel":"room","id":"a5","data":' + '{"a":'.repeat(5000) + '1' + '}'.repeat(5000) + '}'],
  ['a string full of brackets (not nesting at all) next to a deep value', '{"type":"ping","x":"' + '['.repeat(3000) + '","y":' + deep(3000) + '}']
]

test('WebSocket: frames nested thousands deep get an error frame; the node and its other clients carry on', async (t) => {
  const { url, wsUrl } = await startHerald(t)
  const victim = await WsClient.connect(wsUrl)
  await victim.subscribe('room')
  const attacker = await WsClient.connect(wsUrl)
  for (const [what, frame] of ATTACKS) {
    const from = attacker.frames.length
    attacker.send(frame)
    const reply = await attacker.waitFor((f) => f.type === 'error', 5000, from)
    assert.match(reply.code, /^HERALD_ERR_(BAD_FRAME|UNKNOWN_FRAME|BAD_CHANNEL)$/, what)
    assert.ok(reply.message.length < 300, what + ': the message does not echo the attack')
  }
  // Still connected and still served: a ping is answered, the victim gets events.
  attacker.send({ type: 'ping', id: 'still-here' })
  await attacker.waitFor((f) => f.type === 'pong' && f.id === 'still-here')
  assert.equal((await publish(url, 'room', { after: 'attack' })).status, 201)
  const [event] = await victim.events('room', 1)
  assert.deepEqual(event.data, { after: 'attack' })
})

test('WebSocket: data nested within the bound is still accepted', async (t) => {
  const { wsUrl } = await startHerald(t)
  const client = await WsClient.connect(wsUrl)
  await client.subscribe('room')
  client.send('{"type":"publish","channel":"room","id":"ok","data":' + deep(60) + '}')
  const ack = await client.waitFor((f) => f.type === 'ack' || f.type === 'error')
  assert.equal(ack.type, 'ack', JSON.stringify(ack))
  const [event] = await client.events('room', 1)
  assert.equal(JSON.stringify(event.data), deep(60))
})

test('REST: a body nested thousands deep, or carrying prototype keys, is a 400 with a code', async (t) => {
  const { url } = await startHerald(t)
  const post = async (body: string): Promise<{ status: number, code: string }> => {
    const res = await fetch(`${url}/v1/channels/room/events`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token()}` }, body })
    return { status: res.status, code: (await res.json() as { code: string }).code }
  }
  assert.deepEqual(await post('{"data":' + deep(5000) + '}'), { status: 400, code: 'HERALD_ERR_VALIDATION' })
  assert.deepEqual(await post('{"data":' + '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000) + '}'), { status: 400, code: 'HERALD_ERR_VALIDATION' })
  assert.deepEqual(await post('{"data":1,"__proto__":{"polluted":true}}'), { status: 400, code: 'HERALD_ERR_MALFORMED_JSON' })
  assert.deepEqual(await post('{"data":{"constructor":{"prototype":{"polluted":true}}}}'), { status: 400, code: 'HERALD_ERR_MALFORMED_JSON' })
  assert.equal(({} as Record<string, unknown>).polluted, undefined)
  assert.equal((await publish(url, 'room', { fine: deep(3) })).status, 201, 'and the node still publishes')
})

test('the standalone server process survives the 10 KB frame that used to crash it', async (t) => {
  const server = await startServer({ JWT_SECRET: 'deep-json-test-secret-0123456789' })
  cleanup(t, server)
  const tok = token({}, { key: 'deep-json-test-secret-0123456789' })
  const attacker = await WsClient.connect(server.wsUrl, { token: tok })
  attacker.send('{"type":"subscribe","channel":' + deep(5000) + '}')
  await attacker.waitFor((f) => f.type === 'error')
  assert.equal(server.child.exitCode, null, 'still running')
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200)
})

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Socket } from 'node:net'
import type { BrokerHandler } from '../src/bus/broker.js'
import { startHerald, WsClient } from './helper.js'

/**
 * Event frames a WebSocket gets in one turn of the event loop go out in one write (one syscall), in order, and
 * before any other frame sent after them. Counted on the server's real TCP socket.
 */
async function setup (t: Parameters<typeof startHerald>[0], writeDelayMs = 0, pingSeconds?: number): Promise<{ app: Awaited<ReturnType<typeof startHerald>>['app'], client: WsClient, writes: () => number }> {
  const { app, wsUrl } = await startHerald(t, { config: { ws: { writeDelayMs }, ...(pingSeconds === undefined ? {} : { wsPingIntervalSeconds: pingSeconds }) } })
  const client = await WsClient.connect(wsUrl)
  t.after(() => { client.socket.terminate() })
  await client.subscribe('batch:1')
  await client.subscribe('batch:2')
  // The server's end of this connection is the socket whose remote port is the client's local port.
  const clientPort = (client.socket as unknown as { _socket: Socket })._socket.localPort
  let count = 0
  const original = Socket.prototype.write
  Socket.prototype.write = function (this: Socket, ...args: unknown[]) {
    if (this.remotePort === clientPort && this.localPort !== clientPort) count++
    return (original as (...a: unknown[]) => boolean).apply(this, args)
  } as typeof original
  t.after(() => { Socket.prototype.write = original })
  return { app, client, writes: () => count }
}

test('WebSocket: the events one socket gets in one turn go out in one write, in order, across channels', async (t) => {
  const { app, client, writes } = await setup(t)
  const broker = app.herald.broker
  // The in-process bus dispatches the publications of one turn together, after it: six of them, on two channels.
  const sent = [1, 2, 3, 4, 5, 6].map(async (i) => await broker.publish({ channel: i % 2 === 0 ? 'batch:2' : 'batch:1', data: { i } }))
  await Promise.all(sent)
  await client.waitFor(() => client.frames.filter((f) => f.type === 'event').length >= 6)
  assert.deepEqual(client.frames.filter((f) => f.type === 'event').map((f) => (f.data as { i: number }).i), [1, 2, 3, 4, 5, 6])
  assert.deepEqual(client.frames.filter((f) => f.type === 'event' && f.channel === 'batch:1').map((f) => f.offset), [1, 2, 3])
  assert.equal(writes(), 1, 'six event frames, one write')

  // One event in a turn of its own: one more write.
  await broker.publish({ channel: 'batch:1', data: { i: 7 } })
  await client.events('batch:1', 4)
  assert.equal(writes(), 2)
})

test('WebSocket: a frame sent after batched events (here the drain close) goes out after them', async (t) => {
  const { app, client } = await setup(t)
  const broker = app.herald.broker
  // Drain in the very turn the two events reach the socket (right after the bus hands over the second one): it
  // closes with 1012, which must not overtake them.
  const handler = (broker as unknown as { handler: BrokerHandler }).handler
  const onPublication = handler.onPublication
  handler.onPublication = (pub) => { onPublication(pub); if (pub.channel === 'batch:2') app.herald.drain() }
  void broker.publish({ channel: 'batch:1', data: { i: 1 } })
  void broker.publish({ channel: 'batch:2', data: { i: 2 } })
  const closed = await client.waitClosed()
  assert.equal(closed.code, 1012)
  assert.deepEqual(client.frames.filter((f) => f.type === 'event').map((f) => (f.data as { i: number }).i), [1, 2])
})

test('WS_WRITE_DELAY_MS (config ws.writeDelayMs): events of several turns wait and go out together; any other frame flushes them first', async (t) => {
  // The longest delay allowed: the ping below lets the events out first, unless the machine stalls for that long.
  const { app, client, writes } = await setup(t, 1000, 300)
  const broker = app.herald.broker
  // What a pong costs in writes, with nothing held.
  client.send({ type: 'ping', id: 'base' })
  await client.waitFor((f) => f.type === 'pong' && f.id === 'base')
  const pongWrites = writes()
  const start = Date.now()
  for (let i = 1; i <= 3; i++) {
    await broker.publish({ channel: 'batch:1', data: { i } })
    await new Promise((resolve) => setImmediate(resolve)) // each in a turn of its own
    await new Promise((resolve) => setImmediate(resolve))
  }
  const heldBefore = writes() - pongWrites
  const withinWindow = Date.now() - start < 1000
  client.send({ type: 'ping', id: 'flush' })
  await client.waitFor((f) => f.type === 'pong' && f.id === 'flush')
  const kinds = client.frames.filter((f) => f.type === 'event' || (f.type === 'pong' && f.id === 'flush')).map((f) => f.type === 'pong' ? 'pong' : (f.data as { i: number }).i)
  assert.deepEqual(kinds, [1, 2, 3, 'pong'], 'the held events before the pong, in order')
  // Without the delay these are three writes (one per turn) and the pong a fourth.
  if (withinWindow) {
    assert.equal(heldBefore, 0, 'held, not written, within the window')
    assert.equal(writes() - 2 * pongWrites, 1, 'three events of three turns went out together, in one write')
  }
})

test('WebSocket heartbeat: a ping rides in the socket\'s next event write, not a write of its own; with no events it goes alone', async (t) => {
  // WS_PING_INTERVAL=1: a ping waits at most one tick (100 ms) for an event write.
  const { app, client, writes } = await setup(t, 0, 1)
  const broker = app.herald.broker
  let pings = 0
  let pinged = (): void => {}
  client.socket.on('ping', () => { pings++; pinged() })
  const nextPing = async (): Promise<void> => { await new Promise<void>((resolve) => { pinged = resolve }) }
  const before = writes()
  // An event every 20 ms, each in a turn of its own (one write each), until three heartbeat rounds have pinged.
  let published = 0
  while (pings < 3 && published < 1000) {
    await broker.publish({ channel: 'batch:1', data: { i: published } })
    published++
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  const events = await client.events('batch:1', published)
  assert.deepEqual(events.map((f) => f.offset), Array.from({ length: published }, (_, i) => i + 1), 'every event, in order, around the pings')
  assert.ok(pings >= 3, `${pings} pings`)
  const own = writes() - before - published
  // Each ping rides unless the process stalled for the whole 100 ms it waits; at least one of three must have.
  assert.ok(own < pings, `${pings} pings took ${own} writes of their own`)
  // The client answered the pings that rode (the heartbeat pinged again instead of terminating): no close frame.
  assert.equal(client.closed, null)

  // No events: the ping goes alone when its wait is over, and the answered ones keep the socket open.
  const quiet = writes()
  await nextPing()
  await nextPing()
  assert.ok(writes() > quiet, 'a ping with no event to ride with is written on its own')
  assert.equal(client.closed, null)
  client.send({ type: 'ping', id: 'still-open' })
  await client.waitFor((f) => f.type === 'pong' && f.id === 'still-open')
})

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { redisCli, redisSkipReason, SECRET, startHerald, startRedis, token, until, WsClient } from '../helper.js'
import { cleanup, startServer } from '../support/process.js'
import { Receiver } from '../support/webhook-receiver.js'

/*
 * A Herald node (C, a real process) is SIGKILLed while it holds a channel and a user, and while the webhooks it
 * announced for them are in flight from it (the receiver does not answer). The other node (B) delivers those same
 * webhooks (same ids) once their visibility timeout ends, and, once C's liveness deadline has passed, announces the
 * channel vacated and the user offline — once each.
 */

const WEBHOOK_SECRET = 'webhook-secret-0123456789abcdef'
const TTL_SECONDS = 3
const DEBOUNCE_MS = 300
const TIMEOUT_MS = 1000

void test('a node SIGKILLed with a subscriber and webhooks in flight: the other node delivers them, then announces vacated and offline once', { skip: redisSkipReason(), timeout: 120_000 }, async (t) => {
  const redis = await startRedis(t)
  const receiver = await Receiver.start(t)
  receiver.mode = 'hang'
  const webhooks = { url: receiver.url, secret: WEBHOOK_SECRET, debounceMs: DEBOUNCE_MS, timeoutMs: TIMEOUT_MS }
  const c = await startServer({
    HOST: '127.0.0.1',
    JWT_SECRET: SECRET,
    REDIS_URL: redis.url,
    REDIS_PREFIX: 'herald-test',
    PRESENCE_TTL: String(TTL_SECONDS),
    POLL_LINGER: '0',
    LOG_LEVEL: 'warn',
    WEBHOOK_URL: webhooks.url,
    WEBHOOK_SECRET: webhooks.secret,
    WEBHOOK_DEBOUNCE_MS: String(DEBOUNCE_MS),
    WEBHOOK_TIMEOUT_MS: String(TIMEOUT_MS)
  })
  cleanup(t, c)

  // 1. A subscriber on C: C announces, claims and sends both webhooks; the receiver holds them unanswered.
  const ws = await WsClient.connect(c.wsUrl, { token: token({ sub: 'gus' }) })
  ws.socket.on('error', () => {})
  await ws.subscribe('room:k')
  await receiver.until(() => receiver.received.length === 2, 'both webhooks in flight from C', 30_000)
  const inFlight = receiver.received.map((r) => r.body.id).sort()
  assert.deepEqual(receiver.received.map((r) => r.headers['x-herald-attempt']), ['1', '1'])

  // 2. B joins; C dies. The receiver answers from now on.
  const b = await startHerald(t, { redisUrl: redis.url, config: { webhooks, presence: { ttlSeconds: TTL_SECONDS }, pollLingerSeconds: 0 } })
  receiver.mode = 'ok'
  await c.kill('SIGKILL')
  // C's last liveness deadline, final now that nothing renews it.
  const members = redisCli(redis, 'ZRANGE', '{herald-test:wh}:nodes', '0', '-1', 'WITHSCORES').split('\n')
  // Member, deadline pairs, by deadline: B's may come first (C renewed after B started), so look at members only.
  const cMember = members.findIndex((m, i) => i % 2 === 0 && !m.startsWith(b.app.herald.nodeId + '.'))
  assert.ok(cMember >= 0, `C's member among ${members.join(' ')}`)
  const cDeadline = Number(members[cMember + 1])

  // 3. B delivers the webhooks C had in flight, with their ids (attempt 2), once their visibility timeout has ended;
  // 4. past C's deadline, B releases what C held: vacated and offline after the debounce, once each. The two happen
  // in no set order (the redelivery waits for the visibility timeout, the release for C's deadline), so the
  // receiver's arrival order is not looked at: order by ts, as docs/webhooks.md tells receivers.
  await receiver.until(() => receiver.delivered().length === 4, 'the in-flight webhooks again, then vacated and offline', 30_000)
  await until(() => redisCli(redis, 'ZCARD', '{herald-test:wh}:q') === '0', 'the queue is empty')
  const redelivered = receiver.delivered().filter((body) => inFlight.includes(body.id))
  assert.deepEqual(redelivered.map((body) => body.id).sort(), inFlight)
  assert.deepEqual(redelivered.map((body) => body.type).sort(), ['channel.occupied', 'user.online'])
  for (const id of inFlight) assert.deepEqual(receiver.attempts(id).map((r) => [r.answer, r.headers['x-herald-attempt']]), [['hang', '1'], ['ok', '2']])
  const byTs = (bodies: Array<{ type: string, ts: number }>): string[] => [...bodies].sort((x, y) => x.ts - y.ts).map((body) => body.type)
  assert.deepEqual(byTs(receiver.delivered({ channel: 'room:k' })), ['channel.occupied', 'channel.vacated'])
  assert.deepEqual(byTs(receiver.delivered({ sub: 'gus' })), ['user.online', 'user.offline'])
  for (const body of receiver.delivered().filter((b) => !inFlight.includes(b.id))) {
    assert.ok(body.ts >= cDeadline + DEBOUNCE_MS, `${body.type} at ${body.ts}, C's deadline ${cDeadline}`)
  }
  assert.equal(redisCli(redis, 'ZCARD', '{herald-test:wh}:nodes'), '1', 'C is gone from the members; B remains')
  assert.equal(redisCli(redis, 'EXISTS', '{herald-test:wh}:k:c:room:k'), '0', 'nothing holds room:k any more')
})

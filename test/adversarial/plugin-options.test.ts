import { test } from 'node:test'
import assert from 'node:assert/strict'
import Fastify from 'fastify'
import herald from '../../src/app.js'
import { ConfigError } from '../../src/errors.js'
import { SECRET, startHerald, WsClient } from '../helper.js'

// Plugin options are a host's code, often plain JavaScript: a partial object must not leave holes (a partial
// `limits` once turned the frame-rate bucket into NaN, letting every frame through), and a bad value must be
// refused by name, like the environment variable it stands for.

test('a partial limits object keeps every other limit at its default (the frame rate still applies)', async (t) => {
  const h = await startHerald(t, { config: { limits: { maxConnections: 50 } } })
  assert.equal(h.app.herald.config.limits.wsRate, 50)
  assert.equal(h.app.herald.config.limits.wsBurst, 100)
  assert.equal(h.app.herald.config.limits.maxConnections, 50)
  const ws = await WsClient.connect(h.wsUrl)
  for (let i = 0; i < 150; i++) ws.send({ type: 'ping' })
  const limited = await ws.waitFor((f) => f.type === 'error')
  assert.equal(limited.code, 'HERALD_ERR_RATE_LIMITED', 'frames past the default burst are refused')
})

test('mistyped, out-of-range and unknown plugin options are refused, each by name', async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ limits: { wsRate: 'fast' } }, /limits\.wsRate/],
    [{ limits: { wsBurst: Number.NaN } }, /limits\.wsBurst/],
    [{ maxSubscriptions: 0 }, /maxSubscriptions=0/],
    [{ history: { size: -1 } }, /history\.size/],
    [{ redisPrefix: 'a{b}' }, /redisPrefix/],
    [{ limitz: { maxConnections: 1 } }, /limitz: unknown option/],
    [{ limits: { maxConnection: 1 } }, /limits\.maxConnection: unknown option/],
    [{ corsOrigins: 42 }, /corsOrigins/],
    [{ redisUrl: 'http://x' }, /redisUrl/]
  ]
  for (const [config, message] of cases) {
    const app = Fastify()
    await assert.rejects(async () => await app.register(herald, { config: { jwt: { secret: SECRET, algorithms: ['HS256'] }, ...(config as object) } }),
      (err: unknown) => err instanceof ConfigError && message.test(err.message), JSON.stringify(config))
    await app.close()
  }
})

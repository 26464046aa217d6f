import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { SECRET, startHerald } from '../helper.js'
import { cleanup, startServer } from '../support/process.js'

// GET /dev/token signs a token for any `sub`, allowed to subscribe to everything. It must exist only where the
// key is one Herald generated for itself (a standalone development server with no key configured), or where a
// plugin host asked for it by name. Everywhere else it is a 404 — tried here in every other configuration.

async function devTokenStatus (base: string): Promise<number> {
  const res = await fetch(`${base}/dev/token?sub=admin`)
  if (res.status === 200) await res.json()
  else assert.equal((await res.json() as { code: string }).code, 'HERALD_ERR_NOT_FOUND')
  return res.status
}

const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })

test('plugin form: no /dev/token with the default config, a secret, a public key, or in production', async (t) => {
  for (const config of [
    {},
    { jwt: { secret: SECRET, algorithms: ['HS256'] } },
    { jwt: { publicKey, algorithms: ['ES256'] } },
    { production: true }
  ]) {
    const app = await startHerald(t, { config })
    assert.equal(await devTokenStatus(app.url), 404, JSON.stringify(config))
  }
  const prefixed = await startHerald(t, { options: { prefix: '/realtime' } })
  assert.equal(await devTokenStatus(prefixed.url), 404, 'under a prefix either')
})

test('plugin form: a host that opts in explicitly gets /dev/token (outside production only)', async (t) => {
  const dev = await startHerald(t, { config: { devToken: true } })
  assert.equal(await devTokenStatus(dev.url), 200)
  const prod = await startHerald(t, { config: { devToken: true, production: true } })
  assert.equal(await devTokenStatus(prod.url), 404)
})

test('standalone server: /dev/token only when it generated its own secret', async (t) => {
  const withSecret = await startServer({ JWT_SECRET: 'a-configured-secret-0123456789' })
  cleanup(t, withSecret)
  assert.equal(await devTokenStatus(withSecret.url), 404, 'JWT_SECRET without NODE_ENV=production')

  const withKey = await startServer({ JWT_PUBLIC_KEY: publicKey, JWT_ALGORITHMS: 'ES256' })
  cleanup(t, withKey)
  assert.equal(await devTokenStatus(withKey.url), 404, 'JWT_PUBLIC_KEY')

  const dev = await startServer({})
  cleanup(t, dev)
  assert.equal(await devTokenStatus(dev.url), 200, 'no key at all: the development server')
})

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'
import Fastify from 'fastify'
import herald from '../../src/app.js'
import { ConfigError, loadEnv } from '../../src/config.js'
import { poll, publish, SseClient, startHerald, WsClient } from '../helper.js'
import { spawnTs } from '../support/process.js'

// Public-key tokens (RS256, ES256) with real key pairs on every transport, and the key/algorithm mixes that would
// let anyone holding the public key sign tokens (algorithm confusion), refused before Herald starts.

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
const ecKeys = (): { publicKey: string, privateKey: string } =>
  generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
const ec = ecKeys()
const otherEc = ecKeys()

const claims = { sub: 'pk-user', subscribe: ['*'], publish: ['*'] }
const sign = (key: string, algorithm: string, extra: Record<string, unknown> = {}): string =>
  createSigner({ key, algorithm: algorithm as never, expiresIn: 600_000 })({ ...claims, ...extra })

for (const [alg, keys] of [['RS256', rsa], ['ES256', ec]] as const) {
  test(`${alg} with a real key pair: WebSocket, SSE, long-poll and REST accept its tokens and refuse forgeries`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-keys-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const keyFile = join(dir, 'public.pem')
    writeFileSync(keyFile, keys.publicKey)
    // The key given as a path, as JWT_PUBLIC_KEY may be.
    const { url, wsUrl } = await startHerald(t, { config: { jwt: { publicKey: keyFile, algorithms: [alg] } } })
    const good = sign(keys.privateKey, alg)

    const ws = await WsClient.connect(wsUrl, { token: good })
    await ws.subscribe('pk:room')
    const sse = await SseClient.open(url, ['pk:room'], { token: good })
    t.after(() => sse.close())
    await sse.waitFor((m) => m.data.type === 'subscribed')
    const first = await poll(url, ['pk:room'], { token: good, timeout: 0 })
    assert.equal(first.status, 200)

    const pub = await publish(url, 'pk:room', { n: 1 }, { token: good })
    assert.equal(pub.status, 201)
    assert.equal((await ws.events('pk:room', 1))[0].data.n, 1)
    assert.equal((await sse.waitEvents('pk:room', 1))[0].data.n, 1)
    const next = await poll(url, ['pk:room'], { token: good, cursor: first.body.cursor, timeout: 5 })
    assert.deepEqual(next.body.events.map((e: { offset: number }) => e.offset), [1])
    const history = await fetch(`${url}/v1/channels/pk:room/events?since=0`, { headers: { authorization: `Bearer ${good}` } })
    assert.equal(history.status, 200)

    const forgeries: Record<string, string> = {
      'HS256 signed with the public key as the secret': sign(keys.publicKey, 'HS256'),
      'signed by another key pair': sign(otherEc.privateKey, 'ES256'),
      'alg none': Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url') + '.' + Buffer.from(JSON.stringify(claims)).toString('base64url') + '.'
    }
    for (const [what, forged] of Object.entries(forgeries)) {
      const rest = await publish(url, 'pk:room', { forged: true }, { token: forged })
      assert.equal(rest.status, 401, what + ' (REST)')
      assert.equal(rest.body.code, 'HERALD_ERR_UNAUTHORIZED', what)
      await assert.rejects(WsClient.connect(wsUrl, { token: forged }), (err: { status?: number }) => err.status === 401, what + ' (WebSocket)')
      await assert.rejects(SseClient.open(url, ['pk:room'], { token: forged }), (err: { status?: number }) => err.status === 401, what + ' (SSE)')
      assert.equal((await poll(url, ['pk:room'], { token: forged, timeout: 0 })).status, 401, what + ' (long-poll)')
    }
    assert.equal(ws.events.length > 0 && (await ws.events('pk:room', 1)).length, 1, 'no forged event reached the subscriber')
  })
}

test('key and algorithm mixes that allow forgery are refused in the environment and in plugin options', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-keys-'))
  try {
    const refused: Array<[string, Record<string, string>, RegExp]> = [
      ['a public key with HS256', { JWT_PUBLIC_KEY: rsa.publicKey, JWT_ALGORITHMS: 'HS256' }, /HMAC secret/],
      ['a public key with RS256 and HS256', { JWT_PUBLIC_KEY: rsa.publicKey, JWT_ALGORITHMS: 'RS256,HS256' }, /HMAC secret/],
      ['a key path that does not exist', { JWT_PUBLIC_KEY: join(dir, 'missing.pem') }, /neither PEM text nor the path/],
      ['a file that holds no PEM', { JWT_PUBLIC_KEY: (writeFileSync(join(dir, 'x.txt'), 'not a key'), join(dir, 'x.txt')) }, /neither PEM text nor the path/],
      ['PEM text that is not a key', { JWT_PUBLIC_KEY: '-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----' }, /not a usable public key/],
      ['a secret with RS256', { JWT_SECRET: 'a-long-enough-secret-01234', JWT_ALGORITHMS: 'RS256' }, /HS256\/HS384\/HS512 only/],
      ['an RSA key with ES256 only', { JWT_PUBLIC_KEY: rsa.publicKey, JWT_ALGORITHMS: 'ES256' }, /fits the rsa public key/],
      ['a secret and a public key', { JWT_SECRET: 'a-long-enough-secret-01234', JWT_PUBLIC_KEY: ec.publicKey }, /both set/]
    ]
    for (const [what, env, message] of refused) {
      assert.throws(() => loadEnv(env), (err: unknown) => err instanceof ConfigError && message.test(err.message), what)
    }
    const app = Fastify()
    await assert.rejects(async () => await app.register(herald, { config: { jwt: { publicKey: ec.publicKey, algorithms: ['HS256'] } } }), /HMAC secret/)
    await app.close()
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('the standalone server exits 78 on a public key with HS256', async () => {
  const proc = spawnTs('src/server.ts', [], { env: { JWT_PUBLIC_KEY: ec.publicKey, JWT_ALGORITHMS: 'HS256', PORT: '0' } })
  const { code } = await proc.exited
  rmSync(proc.cwd, { recursive: true, force: true })
  assert.equal(code, 78)
  assert.match(proc.stderr(), /HMAC secret/)
})

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { loadEnv, configFromEnv, defaultConfig, ConfigError, EnvSchema } from '../src/config.js'

const EC_PUBLIC_KEY = generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } }).publicKey

const SECRET = 'config-test-secret-0123456789'

/** Runs loadEnv and returns the ConfigError it must throw. */
function problemsOf (env: Record<string, string>): ConfigError {
  try {
    loadEnv(env)
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`)
    assert.equal(err.name, 'ConfigError')
    return err
  }
  assert.fail(`loadEnv(${JSON.stringify(env)}) should have thrown`)
}

test('loadEnv: an empty environment gives the documented defaults', () => {
  const env = loadEnv({})
  assert.equal(env.NODE_ENV, 'development')
  assert.equal(env.PORT, 3000)
  assert.equal(env.HOST, '127.0.0.1')
  assert.equal(env.LOG_LEVEL, 'info')
  assert.equal(env.REDIS_URL, undefined)
  assert.equal(env.REDIS_PREFIX, 'herald')
  assert.equal(env.JWT_SECRET, undefined)
  assert.equal(env.CORS_ORIGINS, '*')
  assert.equal(env.HISTORY_SIZE, 1000)
  assert.equal(env.HISTORY_TTL, 3600)
  assert.equal(env.IDEMPOTENCY_TTL, 300)
  assert.equal(env.MAX_BODY_BYTES, 65536)
  assert.equal(env.MAX_FRAME_BYTES, 65536)
  assert.equal(env.MAX_SUBSCRIPTIONS, 128)
  assert.equal(env.HISTORY_LIMIT_MAX, 1000)
  assert.equal(env.POLL_TIMEOUT_MAX, 30)
  assert.equal(env.DRAIN_TIMEOUT, 10)
  // Every schema property with a default got it.
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    const def = (schema as { default?: unknown }).default
    if (def !== undefined) assert.equal((env as Record<string, unknown>)[key], def, key)
  }
  // Empty strings count as unset.
  assert.equal(loadEnv({ PORT: '', LOG_LEVEL: '' }).PORT, 3000)
})

test('loadEnv: strings are converted to numbers', () => {
  const env = loadEnv({ PORT: '3000', HISTORY_SIZE: '0', DRAIN_TIMEOUT: '0', MAX_SUBSCRIPTIONS: '7', LOG_LEVEL: 'debug', HOST: '0.0.0.0', JWT_SECRET: SECRET })
  assert.equal(env.PORT, 3000)
  assert.equal(typeof env.PORT, 'number')
  assert.equal(env.HISTORY_SIZE, 0)
  assert.equal(env.DRAIN_TIMEOUT, 0)
  assert.equal(env.MAX_SUBSCRIPTIONS, 7)
  assert.equal(env.LOG_LEVEL, 'debug')
  assert.equal(env.HOST, '0.0.0.0')
  assert.equal(env.JWT_SECRET, SECRET)
  assert.equal(loadEnv({ PORT: '0' }).PORT, 0)
  assert.equal(loadEnv({ PORT: '65535' }).PORT, 65535)
  assert.equal(loadEnv({ REDIS_URL: 'rediss://cache.internal:6380/2' }).REDIS_URL, 'rediss://cache.internal:6380/2')
})

test('loadEnv: each bad value is reported with the variable\'s name', () => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PORT: '-1' }, 'PORT'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ REDIS_URL: 'http://x' }, 'REDIS_URL'],
    [{ REDIS_PREFIX: 'has space' }, 'REDIS_PREFIX'],
    [{ JWT_SECRET: 'short' }, 'JWT_SECRET'],
    [{ JWT_ALGORITHMS: 'none' }, 'JWT_ALGORITHMS'],
    [{ JWT_ALGORITHMS: 'HS256,' }, 'JWT_ALGORITHMS'],
    [{ HISTORY_SIZE: '-1' }, 'HISTORY_SIZE'],
    [{ MAX_BODY_BYTES: '10' }, 'MAX_BODY_BYTES'],
    [{ MAX_SUBSCRIPTIONS: '0' }, 'MAX_SUBSCRIPTIONS'],
    [{ DRAIN_TIMEOUT: 'soon' }, 'DRAIN_TIMEOUT']
  ]
  for (const [env, name] of cases) {
    const err = problemsOf(env)
    const value = Object.values(env)[0]
    assert.ok(err.problems.length >= 1, name)
    assert.ok(err.problems.every((p) => p.startsWith(`${name}=`)), `${JSON.stringify(env)}: every problem names ${name}: ${JSON.stringify(err.problems)}`)
    // The message shows the offending value, so the operator sees what was read.
    assert.ok(err.problems[0].includes(value), `${name}: the value appears in ${err.problems[0]}`)
    assert.match(err.message, /^Invalid configuration:\n {2}- /)
    assert.ok(err.message.includes(name), err.message)
  }
})

test('loadEnv: integer settings take integers only (no silent truncation or booleans)', () => {
  // Otherwise PORT=3000.5 listens on 3000, PORT=true on port 1, HISTORY_TTL=1.5 keeps events 1 s.
  for (const [name, value] of [['PORT', '3000.5'], ['PORT', 'true'], ['HISTORY_TTL', '1.5'], ['MAX_SUBSCRIPTIONS', '2.9']]) {
    const err = problemsOf({ [name]: value })
    assert.ok(err.problems.some((p) => p.startsWith(`${name}=`)), `${name}=${value}: ${JSON.stringify(err.problems)}`)
  }
})

test('loadEnv: several bad values are reported at once', () => {
  const err = problemsOf({ PORT: 'abc', LOG_LEVEL: 'loud', REDIS_URL: 'http://x', JWT_SECRET: 'short', HISTORY_SIZE: '-1', HOST: 'localhost' })
  const named = new Set(err.problems.map((p) => p.slice(0, p.indexOf('='))))
  assert.deepEqual([...named].sort(), ['HISTORY_SIZE', 'JWT_SECRET', 'LOG_LEVEL', 'PORT', 'REDIS_URL'])
  for (const name of named) assert.ok(err.message.includes(name), name)
  assert.equal(new Set(err.problems).size, err.problems.length, 'no duplicate lines')
})

test('loadEnv: ten bad numbers are all reported, not just the first few', () => {
  const names = ['PORT', 'HISTORY_SIZE', 'HISTORY_TTL', 'HISTORY_META_TTL', 'IDEMPOTENCY_TTL', 'MAX_BODY_BYTES', 'MAX_FRAME_BYTES', 'MAX_SUBSCRIPTIONS', 'HISTORY_LIMIT_MAX', 'POLL_TIMEOUT_MAX']
  const err = problemsOf(Object.fromEntries(names.map((n) => [n, 'x'])))
  const named = new Set(err.problems.map((p) => p.slice(0, p.indexOf('='))))
  assert.deepEqual([...named].sort(), [...names].sort())
})

test('loadEnv: NODE_ENV=production requires a JWT key', () => {
  const err = problemsOf({ NODE_ENV: 'production' })
  assert.match(err.message, /JWT_SECRET/)
  assert.match(err.message, /production/)
  assert.equal(loadEnv({ NODE_ENV: 'production', JWT_SECRET: SECRET }).NODE_ENV, 'production')
  assert.equal(loadEnv({ NODE_ENV: 'production', JWT_PUBLIC_KEY: EC_PUBLIC_KEY }).NODE_ENV, 'production')
  // A too-short secret in production is a bad value, not a missing one.
  const short = problemsOf({ NODE_ENV: 'production', JWT_SECRET: 'short' })
  assert.ok(short.problems.some((p) => p.startsWith('JWT_SECRET=')))
  // Development starts without a key (the server then makes a development secret).
  assert.equal(loadEnv({ NODE_ENV: 'development' }).JWT_SECRET, undefined)
})

test('loadEnv reads only the object it is given', () => {
  const saved = process.env.PORT
  process.env.PORT = 'not-a-port'
  try {
    assert.equal(loadEnv({}).PORT, 3000)
    // The plugin form never reads the environment either.
    assert.equal(defaultConfig().maxSubscriptions, 128)
  } finally {
    if (saved === undefined) delete process.env.PORT
    else process.env.PORT = saved
  }
  // Variables the schema does not know are ignored.
  assert.equal((loadEnv({ SOMETHING_ELSE: 'x' }) as Record<string, unknown>).SOMETHING_ELSE, undefined)
})

test('configFromEnv: CORS origins, JWT algorithms and the rest of the mapping', () => {
  const base = (extra: Record<string, string>) => configFromEnv(loadEnv({ JWT_SECRET: SECRET, ...extra }))

  assert.equal(base({}).corsOrigins, '*')
  assert.equal(base({ CORS_ORIGINS: ' * ' }).corsOrigins, '*')
  assert.deepEqual(base({ CORS_ORIGINS: 'https://a.example,https://b.example' }).corsOrigins, ['https://a.example', 'https://b.example'])
  assert.deepEqual(base({ CORS_ORIGINS: ' https://a.example , ,https://b.example ,' }).corsOrigins, ['https://a.example', 'https://b.example'])
  assert.deepEqual(base({ CORS_ORIGINS: 'https://only.example' }).corsOrigins, ['https://only.example'])

  assert.deepEqual(base({}).jwt.algorithms, ['HS256'])
  assert.deepEqual(base({ JWT_ALGORITHMS: 'HS384,HS512' }).jwt.algorithms, ['HS384', 'HS512'])
  const pub = configFromEnv(loadEnv({ JWT_PUBLIC_KEY: EC_PUBLIC_KEY }))
  assert.deepEqual(pub.jwt.algorithms, ['RS256', 'ES256'])
  assert.equal(pub.jwt.publicKey, EC_PUBLIC_KEY)
  assert.equal(pub.jwt.secret, undefined)
  assert.deepEqual(configFromEnv(loadEnv({ JWT_PUBLIC_KEY: EC_PUBLIC_KEY, JWT_ALGORITHMS: 'ES256' })).jwt.algorithms, ['ES256'])

  const c = base({
    NODE_ENV: 'production', REDIS_URL: 'redis://127.0.0.1:6390/1', REDIS_PREFIX: 'hx', HISTORY_SIZE: '5', HISTORY_TTL: '60',
    HISTORY_META_TTL: '0', HISTORY_LIMIT_MAX: '9', IDEMPOTENCY_TTL: '30', MAX_BODY_BYTES: '2048', MAX_FRAME_BYTES: '4096',
    MAX_SUBSCRIPTIONS: '3', POLL_TIMEOUT_MAX: '11', SSE_HEARTBEAT: '12', WS_PING_INTERVAL: '13', MAX_BUFFER_BYTES: '65536', DRAIN_TIMEOUT: '4'
  })
  const expected: Record<string, unknown> = {
    production: true,
    redisUrl: 'redis://127.0.0.1:6390/1',
    redisPrefix: 'hx',
    jwt: { secret: SECRET, publicKey: undefined, algorithms: ['HS256'], requireExp: true, audience: undefined, issuer: undefined },
    corsOrigins: '*',
    history: { size: 5, ttlSeconds: 60, metaTtlSeconds: 0, limitMax: 9, maxBytes: 256 * 1024 * 1024 },
    idempotencyTtlSeconds: 30,
    maxBodyBytes: 2048,
    maxFrameBytes: 4096,
    maxSubscriptions: 3,
    pollTimeoutMax: 11,
    sseHeartbeatSeconds: 12,
    wsPingIntervalSeconds: 13,
    maxBufferBytes: 65536,
    drainTimeoutSeconds: 4
  }
  for (const [key, value] of Object.entries(expected)) assert.deepEqual((c as unknown as Record<string, unknown>)[key], value, key)
  assert.equal(base({}).production, false)
  assert.equal(base({}).redisUrl, undefined)
})

test('defaultConfig: defaults with overrides, for the plugin form', () => {
  const d = defaultConfig()
  assert.equal(d.production, false)
  assert.equal(d.maxBodyBytes, 65536)
  assert.equal(d.jwt.secret, undefined)
  const o = defaultConfig({ maxSubscriptions: 5, corsOrigins: ['https://x.example'] })
  assert.equal(o.maxSubscriptions, 5)
  assert.deepEqual(o.corsOrigins, ['https://x.example'])
  assert.equal(o.maxFrameBytes, 65536, 'the rest keeps its default')
})

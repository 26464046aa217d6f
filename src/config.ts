import { isIP } from 'node:net'
import Type, { type Static } from 'typebox'
import { Value } from 'typebox/value'
import type { NamespacesFile } from './namespaces.js'
import { defaultAlgorithms, resolveJwtSettings, type JwtSettings } from './auth/keys.js'
import { ConfigError } from './errors.js'

export { ConfigError }

/**
 * Every setting Herald reads from its environment. The schema is the single source of truth:
 * defaults, bounds and the descriptions printed in the README's configuration table all come from here.
 */
export const EnvSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development', description: '`production` refuses to start without a JWT key (no generated development secret).' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000, description: 'TCP port to listen on.' }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address to bind (`0.0.0.0` for all interfaces; the Docker image sets it).' }),
  WORKERS: Type.String({ pattern: '^(auto|[1-9][0-9]{0,2})$', default: '1', description: 'Standalone server: worker processes sharing the port, one Herald node each (`auto`: one per core). More than 1 needs REDIS_URL or REDIS_CLUSTER. The primary restarts a worker that dies and drains them all on SIGTERM.' }),
  TRUST_PROXY: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, description: 'Standalone server: the proxies in front of Herald whose `X-Forwarded-For` it believes, so that per-address limits (CONNECT_RATE, the lockout after failed authentications, REST limits without a token) and logs see each client\'s own address: a comma list of addresses and CIDRs (`10.0.0.0/8,fd00::/8`; `loopback`, `linklocal`, `uniquelocal` name those ranges), or the number of proxy hops. Unset: the peer address, and `X-Forwarded-For` is ignored (a client could write anything there).' })),
  LOG_LEVEL: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info', description: 'pino log level.' }),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://', description: 'Use the Redis bus (e.g. `redis://127.0.0.1:6379/0`). Unset: the in-process bus.' })),
  REDIS_CLUSTER: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]+:[0-9]{1,5}(,[A-Za-z0-9_.-]+:[0-9]{1,5})*$', description: 'Use a Redis Cluster (Redis 7+, sharded pub/sub) for the bus, presence and rate limits: a comma list of seed nodes, `host:port,host:port`. Instead of REDIS_URL.' })),
  REDIS_WAIT_REPLICAS: Type.Integer({ minimum: 0, maximum: 16, default: 0, description: 'A publish is acknowledged only once this many replicas of its Redis (its shard\'s primary) hold it (`WAIT`), so acknowledged events survive a failover; past REDIS_WAIT_TIMEOUT it answers 503 `HERALD_ERR_BUS_UNAVAILABLE` (retry with the same id). 0: acknowledged when the primary has it.' }),
  REDIS_WAIT_TIMEOUT: Type.Integer({ minimum: 1, maximum: 60_000, default: 1000, description: 'Milliseconds a publish waits for REDIS_WAIT_REPLICAS replicas.' }),
  REDIS_PREFIX: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,32}$', default: 'herald', description: 'Prefix of every Redis key and pub/sub channel.' }),
  JWT_SECRET: Type.Optional(Type.String({ minLength: 16, description: 'HS256 secret (at least 16 characters). Unset in development: a random one is generated.' })),
  JWT_PUBLIC_KEY: Type.Optional(Type.String({ minLength: 1, description: 'PEM public key, or the path of a PEM file, for RS*/PS*/ES* tokens (instead of JWT_SECRET). Anything else is refused at start-up.' })),
  JWT_ALGORITHMS: Type.Optional(Type.String({ pattern: '^(HS256|HS384|HS512|RS256|RS384|RS512|ES256|ES384|ES512|PS256|PS384|PS512)(,(HS256|HS384|HS512|RS256|RS384|RS512|ES256|ES384|ES512|PS256|PS384|PS512))*$', description: 'Comma list of accepted algorithms. Default: HS256 with a secret, RS256,ES256 with a public key. HS* goes only with a secret and RS/PS/ES only with a public key of their type (other mixes are refused: they allow forged tokens).' })),
  JWT_REQUIRE_EXP: Type.Optional(Type.Boolean({ description: 'Refuse tokens without an `exp` claim. Default: on with NODE_ENV=production, off otherwise.' })),
  JWT_AUDIENCE: Type.Optional(Type.String({ minLength: 1, description: 'Comma list: a token\'s `aud` must be one of these (tokens of other systems signed with the same key are refused). Unset: not checked.' })),
  JWT_ISSUER: Type.Optional(Type.String({ minLength: 1, description: 'Comma list: a token\'s `iss` must be one of these. Unset: not checked.' })),
  CORS_ORIGINS: Type.String({ default: '*', description: 'Comma list of allowed browser origins, or `*`.' }),
  HISTORY_SIZE: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 1000, description: 'Events kept per channel for history and resume.' }),
  HISTORY_TTL: Type.Integer({ minimum: 1, maximum: 30 * 86400, default: 3600, description: 'Seconds an event stays in history.' }),
  HISTORY_META_TTL: Type.Integer({ minimum: 0, maximum: 365 * 86400, default: 7 * 86400, description: 'Seconds an idle channel keeps its epoch and offset counter (0 = forever). After that it starts a new epoch.' }),
  HISTORY_MAX_BYTES: Type.Integer({ minimum: 1024 * 1024, maximum: 64 * 1024 * 1024 * 1024, default: 256 * 1024 * 1024, description: 'In-process bus: bytes of history (all channels together) it may hold; past it, the least recently used channels lose their oldest events (a resume from before them is told `history_trimmed`). The Redis bus: bound Redis itself (maxmemory).' }),
  IDEMPOTENCY_TTL: Type.Integer({ minimum: 1, maximum: 86400, default: 300, description: 'Seconds a publish `id` / `Idempotency-Key` is remembered.' }),
  MAX_BODY_BYTES: Type.Integer({ minimum: 256, maximum: 16 * 1024 * 1024, default: 65536, description: 'Largest REST request body.' }),
  MAX_FRAME_BYTES: Type.Integer({ minimum: 256, maximum: 16 * 1024 * 1024, default: 65536, description: 'Largest WebSocket frame a client may send.' }),
  MAX_SUBSCRIPTIONS: Type.Integer({ minimum: 1, maximum: 100_000, default: 128, description: 'Channels one connection (WebSocket, SSE stream or long-poll) may subscribe to.' }),
  HISTORY_LIMIT_MAX: Type.Integer({ minimum: 1, maximum: 100_000, default: 1000, description: 'Largest `limit` of a history request.' }),
  POLL_TIMEOUT_MAX: Type.Integer({ minimum: 1, maximum: 120, default: 30, description: 'Cap (seconds) on a long-poll `timeout`.' }),
  POLL_LINGER: Type.Integer({ minimum: 0, maximum: 120, default: 10, description: 'Seconds a long-poll session stays subscribed after answering, gathering events for the next poll from the cursor it answered with (0 = every poll starts afresh from its cursor).' }),
  SSE_HEARTBEAT: Type.Integer({ minimum: 1, maximum: 300, default: 15, description: 'Seconds between SSE heartbeat comments.' }),
  WS_PING_INTERVAL: Type.Integer({ minimum: 1, maximum: 300, default: 25, description: 'Seconds between server WebSocket pings; a client that misses one pong is terminated.' }),
  MAX_BUFFER_BYTES: Type.Integer({ minimum: 1024, maximum: 1024 * 1024 * 1024, default: 4 * 1024 * 1024, description: 'Outbound bytes a WebSocket or SSE connection may have queued before it is evicted as a slow consumer.' }),
  MAX_CONNECTIONS: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 100_000, description: 'Most connections on this node (WebSockets, SSE streams, waiting long-polls; also bounds long-poll sessions between polls); more are refused with 429 HERALD_ERR_TOO_MANY_CONNECTIONS.' }),
  MAX_CONNECTIONS_PER_SUB: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 100, description: 'Most connections of one token subject on this node (WebSockets, SSE streams, waiting long-polls); more are refused with 429.' }),
  WS_RATE: Type.Number({ minimum: 0.1, maximum: 1_000_000, default: 50, description: 'Frames per second a WebSocket client may send (token bucket refill).' }),
  WS_BURST: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 100, description: 'Token bucket size: frames a client may send in a burst. Frames over the rate get an error frame; as many again refused within 10 s close the socket with 4008.' }),
  CONNECT_RATE: Type.Number({ minimum: 0.1, maximum: 1_000_000, default: 20, description: 'New WebSocket and SSE connections per second, per client IP and per token subject (token bucket refill); more are refused with 429 before any upgrade.' }),
  CONNECT_BURST: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 100, description: 'Token bucket size of CONNECT_RATE: connections one IP or subject may open at once.' }),
  RATE_LIMIT_MAX: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 1000, description: 'REST requests per RATE_LIMIT_WINDOW per token subject (or IP); shared across nodes through Redis when REDIS_URL is set.' }),
  RATE_LIMIT_WINDOW: Type.Integer({ minimum: 1, maximum: 86400, default: 60, description: 'Seconds of the REST rate-limit window.' }),
  RATE_LIMIT_SYNC_MS: Type.Integer({ minimum: 0, maximum: 10_000, default: 100, description: 'With Redis: each node counts REST requests itself and adds its counts to the shared ones every this many ms (a node that has not yet learned the counts of the others may admit up to one interval of its own traffic over the limit). 0 = one Redis round trip per request, exact across nodes.' }),
  WS_COMPRESSION: Type.Boolean({ default: false, description: 'Offer permessage-deflate to WebSocket clients.' }),
  WS_COMPRESSION_THRESHOLD: Type.Integer({ minimum: 0, maximum: 16 * 1024 * 1024, default: 1024, description: 'Frames smaller than this many bytes are not compressed.' }),
  WS_ACCEPT_BINARY: Type.Boolean({ default: false, description: 'Accept binary WebSocket frames holding UTF-8 JSON (as some clients send); otherwise they are refused with HERALD_ERR_BAD_FRAME.' }),
  NAMESPACES_FILE: Type.Optional(Type.String({ minLength: 1, description: 'Path of the namespaces file (JSON or YAML; docs/namespaces.md). Unset: every namespace takes the defaults.' })),
  POSITION_CHECK: Type.Integer({ minimum: 0, maximum: 3600, default: 10, description: 'Seconds between checks of idle channels against the bus: a channel found behind it (a subscription lost without a sound, e.g. in a Redis failover or slot move) subscribes again and catches up from history. 0 = off.' }),
  PRESENCE_TTL: Type.Integer({ minimum: 3, maximum: 3600, default: 30, description: 'Seconds a presence entry outlives its node without being refreshed (the bound on ghost members after a crash).' }),
  PRESENCE_BATCH_MS: Type.Integer({ minimum: 0, maximum: 10_000, default: 200, description: 'Window (ms) over which join/leave changes are batched into one frame.' }),
  REQUEST_TIMEOUT: Type.Integer({ minimum: 1, maximum: 600, default: 10, description: 'Seconds a request\'s head and body may take to arrive (slow senders are cut off); streams and long-polls are not limited by it once their request is in. Standalone server; plugin hosts spread heraldServerOptions().' }),
  API_KEYS: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Keys of the server API (`/v1/api/…`, `DELETE /v1/channels/{channel}/events`; docs/server-api.md): a comma list, each at least 16 characters, sent as `X-API-Key` (several, so keys rotate without downtime). Unset: those routes answer 403 `HERALD_ERR_API_DISABLED`.' })),
  REVOKE_TTL: Type.Integer({ minimum: 60, maximum: 366 * 86400, default: 86400, description: 'Seconds a server API revocation lasts when it names no `until`: set it to the longest lifetime of the tokens your backend mints (Herald\'s own longest, the development token, lives 24 h).' }),
  REVOKE_MAX: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 100_000, description: 'Most revocations kept at once (each node holds them all in memory, about 200 bytes each); past it a revoke is refused with 429 `HERALD_ERR_TOO_MANY_REVOCATIONS`.' }),
  ADMIN_ENABLED: Type.Boolean({ default: false, description: 'Serve the admin console at `/admin` (docs/operations.md): a browser page that signs in with a key of API_KEYS and acts only through the server API. Off: `/admin` answers 404 `HERALD_ERR_ADMIN_DISABLED`.' }),
  PROXY_CONNECT_URL: Type.Optional(Type.String({ pattern: '^https?://', maxLength: 2048, description: 'Connect hook (docs/proxy.md): a WebSocket, SSE stream or long-poll that arrives without a token is admitted by a POST of `{transport, headers, ip}` here, whose 200 answer names its `sub`, permissions and `channels`; 401/403 refuse it; a timeout or 5xx refuses it with 503 (retry). Unset: a token is required.' })),
  PROXY_SUBSCRIBE_URL: Type.Optional(Type.String({ pattern: '^https?://', maxLength: 2048, description: 'Subscribe hook: in namespaces with `subscribeProxy`, each subscription a client asks for is allowed (200) or refused (403) by a POST of `{sub, channel, info, transport}` here.' })),
  PROXY_PUBLISH_URL: Type.Optional(Type.String({ pattern: '^https?://', maxLength: 2048, description: 'Publish hook: in namespaces with `publishProxy`, each client publish (WebSocket) is POSTed here as `{sub, channel, data, event}`; 200 `{}` publishes it, 200 `{data}` publishes that instead, 4xx refuses it.' })),
  PROXY_REFRESH_URL: Type.Optional(Type.String({ pattern: '^https?://', maxLength: 2048, description: 'Refresh hook: before a connection admitted by the connect hook reaches its `exp`, Herald POSTs `{sub, transport, info}` here; 200 `{exp}` extends it, 4xx closes it (4501). Unset: such connections end at their `exp`.' })),
  PROXY_HEADERS: Type.String({ pattern: '^[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*$', maxLength: 1024, default: 'cookie,authorization,origin,user-agent', description: 'Request headers passed on to the connect hook (comma list, case-insensitive); no other header leaves Herald.' }),
  PROXY_TIMEOUT_MS: Type.Integer({ minimum: 10, maximum: 60_000, default: 3000, description: 'Milliseconds a hook may take to answer; past it the request is refused with 503 `HERALD_ERR_PROXY_UNAVAILABLE` (retry).' }),
  PROXY_MAX_INFLIGHT: Type.Integer({ minimum: 1, maximum: 100_000, default: 1000, description: 'Most hook requests under way at once from this node; more are refused with 503 `HERALD_ERR_PROXY_UNAVAILABLE` rather than queued (a flood of clients must not become a flood on the backend).' }),
  WEBHOOK_URL: Type.Optional(Type.String({ pattern: '^https?://', maxLength: 2048, description: 'Receives `channel.occupied`, `channel.vacated`, `user.online` and `user.offline` (docs/webhooks.md): one POST per transition cluster-wide, at least once, signed with WEBHOOK_SECRET. Unset: no webhooks.' })),
  WEBHOOK_SECRET: Type.Optional(Type.String({ minLength: 16, maxLength: 1024, description: 'Key of the `X-Herald-Signature: sha256=<hex HMAC-SHA256 of the body>` header on every webhook (required with WEBHOOK_URL).' })),
  WEBHOOK_DEBOUNCE_MS: Type.Integer({ minimum: 0, maximum: 600_000, default: 5000, description: 'A channel that empties, or a user whose last connection ends, is reported vacated/offline only if it stays so this long (a reload or reconnect within it sends nothing).' }),
  WEBHOOK_TIMEOUT_MS: Type.Integer({ minimum: 10, maximum: 60_000, default: 5000, description: 'Milliseconds a webhook receiver may take to answer before the delivery counts as failed (and is retried).' }),
  WEBHOOK_MAX_ATTEMPTS: Type.Integer({ minimum: 1, maximum: 100, default: 12, description: 'Deliveries tried per webhook (backoff from 1 s doubling to 5 min) before it is dropped and counted in `herald_webhooks_total{result="dropped"}`.' }),
  WEBHOOK_QUEUE_MAX: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 100_000, description: 'Most webhooks waiting for delivery (in Redis with a Redis bus, in memory otherwise); past it the oldest are dropped and counted.' }),
  WS_WRITE_DELAY_MS: Type.Integer({ minimum: 0, maximum: 1000, default: 0, description: 'Hold a WebSocket\'s events up to this many ms to write them together (fewer writes for busy connections, at that much latency). 0: written at the end of the event loop turn they arrive in.' }),
  DRAIN_TIMEOUT: Type.Integer({ minimum: 0, maximum: 600, default: 10, description: 'Seconds a graceful shutdown waits for connections to finish.' })
})

export type Env = Static<typeof EnvSchema>

/** Resolved configuration, shared by the standalone server and the plugin options. */
export interface HeraldConfig {
  production: boolean
  /**
   * Serve `GET /dev/token`, which signs tokens for anyone who asks. Only the standalone server turns it on, and
   * only when it generated its own development secret (no key configured); a plugin host must opt in explicitly.
   */
  devToken: boolean
  redisUrl?: string
  /** Seed nodes (`host:port`) of a Redis Cluster, instead of `redisUrl`. */
  redisCluster?: string[]
  redisPrefix: string
  /** REDIS_WAIT_REPLICAS / REDIS_WAIT_TIMEOUT: replicas a publish waits for, and for how long. */
  redisWait: { replicas: number, timeoutMs: number }
  jwt: JwtSettings
  corsOrigins: string[] | '*'
  history: { size: number, ttlSeconds: number, metaTtlSeconds: number, limitMax: number, maxBytes: number }
  idempotencyTtlSeconds: number
  maxBodyBytes: number
  maxFrameBytes: number
  maxSubscriptions: number
  pollTimeoutMax: number
  pollLingerSeconds: number
  sseHeartbeatSeconds: number
  wsPingIntervalSeconds: number
  maxBufferBytes: number
  drainTimeoutSeconds: number
  requestTimeoutSeconds: number
  positionCheckSeconds: number
  limits: { maxConnections: number, maxConnectionsPerSub: number, wsRate: number, wsBurst: number, connectRate: number, connectBurst: number, restMax: number, restWindowSeconds: number, restSyncMs: number }
  ws: { compression: boolean, compressionThreshold: number, acceptBinary: boolean, writeDelayMs: number }
  /** Namespace options: a parsed file (plugin users may pass the object), or the path of one. */
  namespaces?: NamespacesFile
  namespacesFile?: string
  presence: { ttlSeconds: number, batchMs: number }
  /** The server API: its keys (none: disabled), and the default lifetime and bound of revocations. */
  api: { keys: string[], revokeTtlSeconds: number, revokeMax: number }
  /** The admin console at `/admin` (ADMIN_ENABLED): off unless turned on. */
  admin: { enabled: boolean }
  /** Proxy hooks to the application (docs/proxy.md); a hook whose URL is unset is not called. */
  proxy: { connectUrl?: string, subscribeUrl?: string, publishUrl?: string, refreshUrl?: string, headers: string[], timeoutMs: number, maxInflight: number }
  /** Channel and user state webhooks (docs/webhooks.md); off without a URL. */
  webhooks: { url?: string, secret?: string, debounceMs: number, timeoutMs: number, maxAttempts: number, queueMax: number }
}

/** Reads, converts and validates the environment; throws a ConfigError listing every bad value. */
export function loadEnv (env: Record<string, string | undefined> = process.env): Env {
  const raw: Record<string, string> = {}
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = env[key]
    if (value !== undefined && value !== '') raw[key] = value
  }
  const converted = Value.Convert(EnvSchema, Value.Default(EnvSchema, { ...raw })) as Env
  // One check per variable: a single validation of the whole object stops after a few errors.
  const problems: string[] = []
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    const value = (converted as Record<string, unknown>)[key]
    if (value === undefined) continue
    if ((schema as { type?: unknown }).type === 'integer' && raw[key] !== undefined && !/^\s*-?\d+\s*$/.test(raw[key])) {
      problems.push(`${key}=${JSON.stringify(raw[key])}: must be an integer`)
      continue
    }
    const first = Value.Errors(schema, value)[0]
    if (first !== undefined) problems.push(`${key}=${JSON.stringify(raw[key])}: ${first.message}`)
  }
  if (converted.TRUST_PROXY !== undefined) problems.push(...trustProxyProblems(converted.TRUST_PROXY))
  if (converted.API_KEYS !== undefined) problems.push(...apiKeysProblems(apiKeysOf(converted.API_KEYS)).map((p) => 'API_KEYS: ' + p))
  if (converted.WEBHOOK_URL !== undefined && converted.WEBHOOK_SECRET === undefined) problems.push('WEBHOOK_URL needs WEBHOOK_SECRET (receivers must be able to tell Herald\'s webhooks from forgeries)')
  if (converted.REDIS_URL !== undefined && converted.REDIS_CLUSTER !== undefined) problems.push('REDIS_URL and REDIS_CLUSTER are both set: use one of them')
  if (problems.length === 0) problems.push(...resolveJwtSettings(jwtOf(converted)).problems)
  if (problems.length > 0) throw new ConfigError(problems)
  if (converted.NODE_ENV === 'production' && !converted.JWT_SECRET && !converted.JWT_PUBLIC_KEY) {
    throw new ConfigError(['JWT_SECRET or JWT_PUBLIC_KEY is required when NODE_ENV=production'])
  }
  return converted
}

/** The keys of an API_KEYS value (comma list, blanks around them ignored). */
export function apiKeysOf (value: string): string[] {
  return value.split(',').map((k) => k.trim()).filter(Boolean)
}

/** The header names of a PROXY_HEADERS value, lower-cased. */
export function headersOf (value: string): string[] {
  return [...new Set(value.split(',').map((h) => h.trim().toLowerCase()).filter(Boolean))]
}

/** Smallest length of a server API key: guessing one must be out of reach. */
export const API_KEY_MIN_LENGTH = 16

/** What is wrong with a list of server API keys (never the keys themselves: they would end up in logs). */
export function apiKeysProblems (keys: unknown): string[] {
  if (!Array.isArray(keys) || keys.length === 0) return ['a non-empty list of keys is required']
  const problems: string[] = []
  keys.forEach((key, i) => {
    if (typeof key !== 'string' || key.length < API_KEY_MIN_LENGTH || key.length > 256 || /[\s,]/.test(key)) {
      problems.push(`key ${i + 1} must be ${API_KEY_MIN_LENGTH}–256 characters without blanks or commas`)
    }
  })
  return problems
}

/** What is wrong with a TRUST_PROXY value (see trustProxyOption). */
export function trustProxyProblems (value: string): string[] {
  if (/^\s*\d+\s*$/.test(value)) {
    const hops = Number(value)
    return hops >= 1 && hops <= 16 ? [] : [`TRUST_PROXY=${JSON.stringify(value)}: a hop count must be 1 to 16`]
  }
  const bad = value.split(',').map((x) => x.trim()).filter((entry) => {
    if (['loopback', 'linklocal', 'uniquelocal'].includes(entry)) return false
    const [address, bits, ...rest] = entry.split('/')
    const family = isIP(address)
    if (family === 0 || rest.length > 0) return true
    if (bits === undefined) return false
    return !/^\d{1,3}$/.test(bits) || Number(bits) > (family === 4 ? 32 : 128)
  })
  return bad.length === 0 ? [] : [`TRUST_PROXY=${JSON.stringify(value)}: not an address, CIDR or range name: ${bad.map((b) => JSON.stringify(b)).join(', ')}`]
}

/** Fastify's `trustProxy` for a TRUST_PROXY value: a hop count, or the list of trusted addresses; unset trusts none. */
export function trustProxyOption (value: string | undefined): ((address: string, hop: number) => boolean) | string | false {
  if (value === undefined) return false
  if (/^\s*\d+\s*$/.test(value)) {
    const hops = Number(value)
    return (_address, hop) => hop < hops
  }
  return value.split(',').map((x) => x.trim()).join(',')
}

function jwtOf (env: Env): HeraldConfig['jwt'] {
  const list = (v: string | undefined): string[] | undefined => v?.split(',').map((x) => x.trim()).filter(Boolean)
  return {
    secret: env.JWT_SECRET,
    publicKey: env.JWT_PUBLIC_KEY,
    algorithms: list(env.JWT_ALGORITHMS) ?? defaultAlgorithms(env.JWT_PUBLIC_KEY !== undefined),
    requireExp: env.JWT_REQUIRE_EXP ?? env.NODE_ENV === 'production',
    audience: list(env.JWT_AUDIENCE),
    issuer: list(env.JWT_ISSUER)
  }
}

/** The JWT settings with a public key read from its file; throws a ConfigError when key and algorithms do not belong together. */
export function checkedJwt (jwt: HeraldConfig['jwt']): HeraldConfig['jwt'] {
  const resolved = resolveJwtSettings(jwt)
  if (resolved.problems.length > 0) throw new ConfigError(resolved.problems)
  return resolved.jwt
}

/**
 * The settings that come straight from one environment variable, by their place in HeraldConfig: configFromEnv
 * puts each there, and plugin options given there are checked against the same variable's schema (bounds and all).
 */
const FIELDS = {
  redisPrefix: 'REDIS_PREFIX',
  'redisWait.replicas': 'REDIS_WAIT_REPLICAS',
  'redisWait.timeoutMs': 'REDIS_WAIT_TIMEOUT',
  'history.size': 'HISTORY_SIZE',
  'history.ttlSeconds': 'HISTORY_TTL',
  'history.metaTtlSeconds': 'HISTORY_META_TTL',
  'history.limitMax': 'HISTORY_LIMIT_MAX',
  'history.maxBytes': 'HISTORY_MAX_BYTES',
  idempotencyTtlSeconds: 'IDEMPOTENCY_TTL',
  maxBodyBytes: 'MAX_BODY_BYTES',
  maxFrameBytes: 'MAX_FRAME_BYTES',
  maxSubscriptions: 'MAX_SUBSCRIPTIONS',
  pollTimeoutMax: 'POLL_TIMEOUT_MAX',
  pollLingerSeconds: 'POLL_LINGER',
  sseHeartbeatSeconds: 'SSE_HEARTBEAT',
  wsPingIntervalSeconds: 'WS_PING_INTERVAL',
  maxBufferBytes: 'MAX_BUFFER_BYTES',
  drainTimeoutSeconds: 'DRAIN_TIMEOUT',
  requestTimeoutSeconds: 'REQUEST_TIMEOUT',
  'limits.maxConnections': 'MAX_CONNECTIONS',
  'limits.maxConnectionsPerSub': 'MAX_CONNECTIONS_PER_SUB',
  'limits.wsRate': 'WS_RATE',
  'limits.wsBurst': 'WS_BURST',
  'limits.connectRate': 'CONNECT_RATE',
  'limits.connectBurst': 'CONNECT_BURST',
  'limits.restMax': 'RATE_LIMIT_MAX',
  'limits.restWindowSeconds': 'RATE_LIMIT_WINDOW',
  'limits.restSyncMs': 'RATE_LIMIT_SYNC_MS',
  'ws.compression': 'WS_COMPRESSION',
  'ws.compressionThreshold': 'WS_COMPRESSION_THRESHOLD',
  'ws.acceptBinary': 'WS_ACCEPT_BINARY',
  'ws.writeDelayMs': 'WS_WRITE_DELAY_MS',
  positionCheckSeconds: 'POSITION_CHECK',
  'presence.ttlSeconds': 'PRESENCE_TTL',
  'presence.batchMs': 'PRESENCE_BATCH_MS',
  'api.revokeTtlSeconds': 'REVOKE_TTL',
  'api.revokeMax': 'REVOKE_MAX',
  'admin.enabled': 'ADMIN_ENABLED',
  'proxy.connectUrl': 'PROXY_CONNECT_URL',
  'proxy.subscribeUrl': 'PROXY_SUBSCRIBE_URL',
  'proxy.publishUrl': 'PROXY_PUBLISH_URL',
  'proxy.refreshUrl': 'PROXY_REFRESH_URL',
  'proxy.timeoutMs': 'PROXY_TIMEOUT_MS',
  'proxy.maxInflight': 'PROXY_MAX_INFLIGHT',
  'webhooks.url': 'WEBHOOK_URL',
  'webhooks.secret': 'WEBHOOK_SECRET',
  'webhooks.debounceMs': 'WEBHOOK_DEBOUNCE_MS',
  'webhooks.timeoutMs': 'WEBHOOK_TIMEOUT_MS',
  'webhooks.maxAttempts': 'WEBHOOK_MAX_ATTEMPTS',
  'webhooks.queueMax': 'WEBHOOK_QUEUE_MAX'
} as const satisfies Record<string, keyof Env>

/** Settings of the plugin form that no environment variable maps to, and the shape each must have. */
const OTHER_FIELDS: Record<string, (v: unknown) => boolean> = {
  production: (v) => typeof v === 'boolean',
  devToken: (v) => typeof v === 'boolean',
  redisUrl: (v) => v === undefined || (typeof v === 'string' && /^rediss?:\/\//.test(v)),
  redisCluster: (v) => v === undefined || (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && /^[A-Za-z0-9_.-]+:[0-9]{1,5}$/.test(x))),
  jwt: (v) => typeof v === 'object' && v !== null,
  corsOrigins: (v) => v === '*' || (Array.isArray(v) && v.every((o) => typeof o === 'string')),
  namespaces: (v) => v === undefined || (typeof v === 'object' && v !== null),
  namespacesFile: (v) => v === undefined || typeof v === 'string',
  'api.keys': (v) => Array.isArray(v) && (v.length === 0 || apiKeysProblems(v).length === 0),
  'proxy.headers': (v) => Array.isArray(v) && v.length <= 64 && v.every((h) => typeof h === 'string' && /^[a-z0-9-]{1,64}$/.test(h))
}

export function configFromEnv (env: Env): HeraldConfig {
  const config = {
    production: env.NODE_ENV === 'production',
    devToken: false,
    redisUrl: env.REDIS_URL,
    redisCluster: env.REDIS_CLUSTER?.split(','),
    jwt: checkedJwt(jwtOf(env)),
    corsOrigins: env.CORS_ORIGINS.trim() === '*' ? '*' : env.CORS_ORIGINS.split(',').map((o) => o.trim()).filter(Boolean),
    namespacesFile: env.NAMESPACES_FILE,
    api: { keys: env.API_KEYS === undefined ? [] : apiKeysOf(env.API_KEYS) },
    proxy: { headers: headersOf(env.PROXY_HEADERS) }
  } as unknown as HeraldConfig
  for (const [path, key] of Object.entries(FIELDS)) setPath(config, path, env[key])
  return config
}

/**
 * The plugin form: `register(herald, { config: { ... } })`. Anything left out, at any depth, takes its default;
 * what is given is checked like the environment variable it stands for (a partial `limits` keeps the other
 * limits; an out-of-range or mistyped value, or an unknown option, is a ConfigError naming it).
 */
export function defaultConfig (overrides: DeepPartial<HeraldConfig> = {}): HeraldConfig {
  const config = configFromEnv(loadEnv({}))
  const problems: string[] = []
  const fields = FIELDS as Record<string, keyof Env>
  const visit = (value: unknown, path: string): void => {
    // Left unset at any depth (the standalone server passes every setting, optional ones as undefined): the default.
    if (value === undefined) return
    if (Object.hasOwn(fields, path)) {
      const first = Value.Errors(EnvSchema.properties[fields[path]], value)[0]
      if (first !== undefined) problems.push(`${path}=${JSON.stringify(value)}: ${first.message} (as ${fields[path]})`)
      else setPath(config, path, value)
    } else if (Object.hasOwn(OTHER_FIELDS, path)) {
      if (!OTHER_FIELDS[path](value)) problems.push(`${path}: not a valid value`)
      else setPath(config, path, value)
    } else if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(fields).some((f) => f.startsWith(path + '.'))) {
      for (const [key, inner] of Object.entries(value)) visit(inner, path + '.' + key)
    } else {
      problems.push(`${path}: unknown option`)
    }
  }
  for (const [key, value] of Object.entries(overrides)) if (value !== undefined) visit(value, key)
  if (config.redisUrl !== undefined && config.redisCluster !== undefined) problems.push('redisUrl and redisCluster are both set: use one of them')
  if (config.webhooks.url !== undefined && config.webhooks.secret === undefined) problems.push('webhooks.url needs webhooks.secret')
  if (problems.length > 0) throw new ConfigError(problems)
  if (overrides.jwt !== undefined) {
    const jwt = overrides.jwt as Partial<JwtSettings>
    config.jwt = checkedJwt({ ...config.jwt, secret: undefined, publicKey: undefined, ...jwt, algorithms: jwt.algorithms ?? defaultAlgorithms(jwt.publicKey !== undefined) })
  }
  // Tokens without `exp` are refused in production unless the host says otherwise.
  if ((overrides.jwt as Partial<JwtSettings> | undefined)?.requireExp === undefined) config.jwt.requireExp = config.production
  return config
}

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends Array<infer _> ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K] }

function setPath (target: object, path: string, value: unknown): void {
  const keys = path.split('.')
  let at = target as Record<string, unknown>
  for (const key of keys.slice(0, -1)) at = (at[key] ??= {}) as Record<string, unknown>
  at[keys[keys.length - 1]] = value
}

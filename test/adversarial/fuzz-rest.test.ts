import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import fc from 'fast-check'
import { decodeCursorText } from '../../src/protocol/cursor-codec.js'
import { Compile } from 'typebox/compile'
import type { TSchema } from 'typebox'
import { ERROR_CODES } from '../../src/errors.js'
import { ERROR_TABLE } from '../../src/protocol/error-codes.js'
import { defaultConfig, type HeraldConfig } from '../../src/config.js'
import { ConnectedFrame } from '../../src/protocol/frames.js'
import { ErrorBody, HistoryReply, PollReply, PresenceCountReply, PresenceReply, PublishReply, WhoAmIReply } from '../../src/schemas.js'
import { SECRET, publish, startHerald, token, type TestApp } from '../helper.js'
import { leftovers, settled } from '../support/fuzz.js'

// Property-based fuzzing of every REST route (openapi/openapi.json, docs/protocol.md, docs/errors.md) over real
// HTTP against a real Herald with the in-process bus: bodies, path parameters (percent-encoded too), query strings
// and headers of POST /v1/channels/:channel/events, GET /v1/channels/:channel/events, …/presence, …/presence/count,
// GET /v1/whoami, GET /v1/poll and GET /v1/sse (whose status and first message are read, then the stream aborted).
// For every answer:
//  - a 2xx has the route's documented shape (the TypeBox schemas the OpenAPI document is generated from, plus what
//    the docs say about it: the channel asked for, history after `since` in order and within `limit`, a cursor
//    covering every polled channel, an SSE stream opening with `retry:` and a `connected` frame);
//  - anything else is a JSON error body {statusCode, code, error, message} with a code of ERROR_CODES, the HTTP
//    status docs/errors.md gives that code, and never HERALD_ERR_INTERNAL (a 5xx INTERNAL is a bug: the failure
//    message names the request that caused it);
//  - a long-poll answered 200 can be followed by the next poll from its cursor ("send `cursor` with the next poll"),
//    which is answered 200 too.
// Besides the routes' own inputs: every route with every method, malformed percent-encoding in paths and queries,
// and requests at the documented size limits (128 channels of 128 characters; a cursor over 16384 characters).
// After every run /healthz still answers 200, and the node is back to zero: no connection (long-poll sessions do
// not linger: POLL_LINGER is 0), no hub subscription or channel, no presence entry. An uncaught exception fails the
// file by itself. Each property is seeded (seed in the test name) and bounded in time; see `params` for exploring
// further (FUZZ_* variables).

const CONFIG: Partial<HeraldConfig> = {
  // Limits out of the way: every run sends a batch of requests and opens streams (rate limits are tested elsewhere).
  limits: { ...defaultConfig().limits, restMax: 10_000_000, connectRate: 100_000, connectBurst: 100_000 },
  pollLingerSeconds: 0,
  namespaces: {
    namespaces: {
      room: { presence: true },
      counts: { presence: true, presenceCountsOnly: true },
      tiny: { historySize: 2 }
    }
  }
}
const MAX_BODY = defaultConfig().maxBodyBytes
const INTERNAL = 'HERALD_ERR_INTERNAL'
const STATUS_OF = new Map<string, number>(Object.values(ERROR_TABLE).map((e) => [e.code, e.status]))
const PRESENCE_CHANNELS = ['room:a', 'room:b', 'counts:y']

const checker = (schema: TSchema): ReturnType<typeof Compile> => Compile(schema)
const SHAPES = {
  error: checker(ErrorBody),
  publish: checker(PublishReply),
  history: checker(HistoryReply),
  presence: checker(PresenceReply),
  count: checker(PresenceCountReply),
  whoami: checker(WhoAmIReply),
  poll: checker(PollReply),
  connected: checker(ConnectedFrame)
}

// ---------------------------------------------------------------- tokens

function sign (claims: object, key = SECRET): string {
  const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url')
  const body = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims)
  return body + '.' + createHmac('sha256', key).update(body).digest('base64url')
}
const now = Math.floor(Date.now() / 1000)
const FULL = token()
const LIMITED = token({ sub: 'limited', subscribe: ['room:*', 'a*'], publish: ['room:*'], info: { name: 'Ünï' } })
const SUB_OF = new Map([[FULL, 'tester'], [LIMITED, 'limited']])

/** How a request authenticates: a header, `?token=`, or not at all; bad tokens of every kind. */
type Auth = { header?: string, query?: string }
const BAD_HEADERS = [
  'Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', `Bearer ${FULL} extra`, `Bearer  ${FULL}x`, 'Bearer a.b.c', 'Bearer ...', `Token ${FULL}`,
  'Bearer ' + sign({ sub: 'tester', subscribe: ['*'], publish: ['*'], exp: now - 60 }),
  'Bearer ' + sign({ sub: 'tester', subscribe: ['*'], publish: ['*'], nbf: now + 3600 }),
  'Bearer ' + sign({ sub: 'tester', subscribe: ['*'] }, 'another-secret-0123456789abcdef'),
  'Bearer ' + Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url') + '.' + Buffer.from('{"sub":"tester","subscribe":["*"],"publish":["*"]}').toString('base64url') + '.',
  'Bearer ' + sign({ sub: 5, subscribe: ['*'] }),
  'Bearer ' + sign({ sub: 'tester', subscribe: '*' }),
  'Bearer ' + sign({ sub: 'tester', publish: [''] }),
  'Bearer ' + sign({ sub: 'x'.repeat(257) }),
  'Bearer ' + 'x'.repeat(8000)
]
const auth: fc.Arbitrary<Auth> = fc.oneof(
  { weight: 24, arbitrary: fc.constant({ header: `Bearer ${FULL}` }) },
  { weight: 4, arbitrary: fc.constant({ header: `Bearer ${LIMITED}` }) },
  { weight: 1, arbitrary: fc.constant({ header: `bearer ${FULL}` }) },
  { weight: 2, arbitrary: fc.constantFrom(FULL, LIMITED, '', 'junk').map((query) => ({ query })) },
  { weight: 2, arbitrary: fc.constantFrom(...BAD_HEADERS).map((header) => ({ header })) },
  { weight: 1, arbitrary: fc.constant({}) }
)

// ---------------------------------------------------------------- values

const GOOD_CHANNELS = ['a', 'b:c', 'room:a', 'room:b', 'counts:y', 'tiny:z', '__proto__:p', 'constructor', 'toString', 'prototype', ':', '-', '_.-@:', 'a'.repeat(128)]
const BAD_CHANNELS = ['a b', 'a'.repeat(129), 'a*', '*', '{a}', 'ch/an', 'é', '😀', 'a\u0000', 'a\n', '%41', '..', '.', '?', '#', 'a%2Fb']

/** Every character percent-encoded, even those that need not be (a decoder must give back the same name). */
const encodeAll = (s: string): string => [...Buffer.from(s)].map((b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join('')
function encode (s: string): string {
  try { return encodeURIComponent(s) } catch { return encodeAll(s) } // lone surrogates: bytes of U+FFFD
}

/** A well-formed path segment (its decoded value is what the server sees), or undefined when it is not decodable. */
interface Segment { raw: string, decoded: string }
const segment: fc.Arbitrary<Segment> = fc.oneof(
  { weight: 20, arbitrary: fc.constantFrom(...GOOD_CHANNELS).map((c) => ({ raw: c, decoded: c })) },
  { weight: 2, arbitrary: fc.constantFrom(...GOOD_CHANNELS).map((c) => ({ raw: encodeAll(c), decoded: c })) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...GOOD_CHANNELS), fc.array(fc.boolean(), { minLength: 1, maxLength: 128 })).map(([c, mask]) => ({ raw: [...c].map((ch, i) => mask[i % mask.length] ? encodeAll(ch) : ch).join(''), decoded: c })) },
  { weight: 2, arbitrary: fc.constantFrom(...BAD_CHANNELS).map((c) => ({ raw: encode(c), decoded: c })) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 24 }).map((c) => ({ raw: encode(c), decoded: c })) },
  { weight: 1, arbitrary: fc.integer({ min: 129, max: 400 }).map((n) => ({ raw: 'c'.repeat(n), decoded: 'c'.repeat(n) })) }
)

const rawNumber = fc.constantFrom('1e400', '-1e400', '-0', '1E+2', '0.0', '123456789012345678901234567890', '1e-400', '9007199254740993')
const specialString = fc.constantFrom('', 'NaN', 'Infinity', '-0', '1e400', 'null', 'undefined', 'true', '__proto__', 'constructor', 'prototype', '\u0000', '\uFEFF', '😀', '\ud800', 'e\u0301', '"', '\\')

class Raw {
  constructor (readonly text: string) {}
  [fc.toStringMethod] (): string { return `raw(${this.text})` }
}
class Obj {
  constructor (readonly pairs: Array<[string, unknown]>) {}
  [fc.toStringMethod] (): string { return serialize(this) }
}
function serialize (v: unknown): string {
  if (v instanceof Raw) return v.text
  if (v instanceof Obj) return '{' + v.pairs.map(([k, x]) => JSON.stringify(k) + ':' + serialize(x)).join(',') + '}'
  if (Array.isArray(v)) return '[' + v.map(serialize).join(',') + ']'
  if (v !== null && typeof v === 'object') return '{' + Object.keys(v).map((k) => JSON.stringify(k) + ':' + serialize((v as Record<string, unknown>)[k])).join(',') + '}'
  return JSON.stringify(v) ?? 'null'
}

const nest = (depth: number, inner: unknown, arrays: boolean): unknown => {
  let v = inner
  for (let i = 0; i < depth; i++) v = arrays || i % 2 === 0 ? [v] : new Obj([['k', v]])
  return v
}
const protoValue = fc.constantFrom(
  new Obj([['__proto__', new Obj([['polluted', true]])]]),
  new Obj([['constructor', new Obj([['prototype', new Obj([['polluted', true]])]])]]),
  new Obj([['prototype', 1], ['toString', 'x'], ['valueOf', []], ['hasOwnProperty', {}]])
)
const junk: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.oneof(fc.constant(null), fc.boolean(), fc.integer(), fc.double(), fc.constantFrom(-1, 2 ** 53 + 2, 1.5, -1e21)) },
  { weight: 3, arbitrary: specialString },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.integer({ min: 129, max: 3000 }).map((n) => 's'.repeat(n)) },
  { weight: 1, arbitrary: rawNumber.map((t) => new Raw(t)) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: protoValue }
)

const OMIT = Symbol('omit')
const field = (good: fc.Arbitrary<unknown>, optional: boolean): fc.Arbitrary<unknown> =>
  fc.oneof({ weight: 12, arbitrary: good }, { weight: 1, arbitrary: junk }, { weight: optional ? 5 : 1, arbitrary: fc.constant(OMIT) })
const idString = fc.oneof(fc.string({ minLength: 1, maxLength: 16 }), fc.string({ unit: 'binary', minLength: 1, maxLength: 64 }), fc.constantFrom('__proto__', 'constructor', 'k'.repeat(128)))

// ---------------------------------------------------------------- requests

type Kind = 'publish' | 'history' | 'presence' | 'count' | 'whoami' | 'poll' | 'sse' | 'any'
interface Req {
  kind: Kind
  method: string
  /** Path and query exactly as sent (percent-encoding included). */
  target: string
  headers: Record<string, string>
  body?: string
  /** The channel of the path, decoded: what a 2xx must name. */
  channel?: string
  /** history: the `since` and `limit` the server will read (when the query says one each, as an integer). */
  since?: number
  limit?: number
  /** poll and sse: the channels asked for. */
  channels?: string[]
  sub?: string
  /** poll: poll again with the answer's cursor ("send `cursor` with the next poll"): this target, plus that cursor. */
  resume?: string
}

function withAuth (a: Auth, headers: Record<string, string>, query: string[]): { headers: Record<string, string>, query: string[], sub?: string } {
  const h = { ...headers }
  const q = [...query]
  if (a.header !== undefined) h.authorization = a.header
  if (a.query !== undefined) q.push('token=' + encode(a.query))
  const tok = a.header?.match(/^Bearer (\S+)$/i)?.[1] ?? (a.header === undefined ? a.query : undefined)
  return { headers: h, query: q, sub: tok === undefined ? undefined : SUB_OF.get(tok) }
}

/** Junk query parameters next to the real ones: unknown names, prototype names, brackets, bad escapes. */
const extraQuery = fc.oneof({ weight: 3, arbitrary: fc.constant([] as string[]) }, { weight: 1, arbitrary: fc.array(fc.oneof(
  fc.constantFrom('__proto__=1', '__proto__[x]=1', 'constructor[prototype][x]=1', 'toString=1', 'x=%', 'x=%zz', 'y=%E0%A4%A', '=', '&', 'a=1=2', 'token', 'since', 'limit=', 'cursor'),
  fc.tuple(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 })).map(([k, v]) => encode(k) + '=' + encode(v))
), { minLength: 1, maxLength: 3 }) })

const query = (parts: string[]): string => parts.length === 0 ? '' : '?' + parts.join('&')

const contentType = fc.oneof(
  { weight: 12, arbitrary: fc.constant('application/json') },
  { weight: 1, arbitrary: fc.constantFrom('application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json; charset=utf-16', 'application/json; ===', 'text/plain', 'application/x-www-form-urlencoded', 'application/vnd.api+json', 'multipart/form-data; boundary=x', ';;;', '', 'application/json, text/plain') },
  { weight: 1, arbitrary: fc.constant(undefined) }
)

/** A publish body: {data, event?, id?} well-formed or mutated, or not an object, or not JSON, too deep, too big. */
const publishBody = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.tuple(
      fc.record({ data: field(fc.oneof(fc.jsonValue({ maxDepth: 4 }), protoValue, fc.tuple(fc.integer({ min: 2, max: 62 }), fc.boolean()).map(([d, a]) => nest(d, 1, a))), false), event: field(fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fc.constant('e'.repeat(128))), true), id: field(idString, true) }),
      fc.oneof({ weight: 8, arbitrary: fc.constant([] as Array<[string, unknown]>) }, { weight: 1, arbitrary: fc.array(fc.tuple(fc.constantFrom('__proto__', 'constructor', 'prototype', 'extra', 'channel', 'type', 'data', 'id'), junk), { minLength: 1, maxLength: 2 }) })
    ).map(([fields, extras]) => serialize(new Obj([...Object.entries(fields).filter(([, v]) => v !== OMIT), ...extras])))
  },
  { weight: 1, arbitrary: fc.oneof(fc.jsonValue({ maxDepth: 2 }).filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)), junk).map(serialize) },
  { weight: 1, arbitrary: fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom('', ' ', '{', '{"data":1,}', "{'data':1}", '\uFEFF{"data":1}', '{"data":1}{"data":2}', '{"data":01}', '{"data":NaN}')) },
  { weight: 1, arbitrary: fc.integer({ min: 65, max: 400 }).map((d) => '{"data":' + '['.repeat(d) + ']'.repeat(d) + '}') },
  { weight: 1, arbitrary: fc.integer({ min: MAX_BODY - 20, max: MAX_BODY + 2000 }).map((n) => '{"data":"' + 'b'.repeat(n) + '"}') }
)

/** A header value fetch will send: Latin-1, no control characters. */
const headerValue = fc.oneof(fc.string({ minLength: 1, maxLength: 16 }), fc.constantFrom('', ' ', 'é', 'k'.repeat(128), 'k'.repeat(129), '__proto__', 'null'))

const idempotencyKey = fc.oneof({ weight: 6, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant('same as the body id') }, { weight: 1, arbitrary: headerValue })
const publishReq: fc.Arbitrary<Req> = fc.record({ seg: segment, body: publishBody, ct: contentType, key: idempotencyKey, a: auth, extra: extraQuery }).map(({ seg, body, ct, key, a, extra }) => {
  const headers: Record<string, string> = {}
  if (ct !== undefined) headers['content-type'] = ct
  let bodyId: unknown
  try { bodyId = (JSON.parse(body) as { id?: unknown }).id } catch {}
  if (key === 'same as the body id') {
    if (typeof bodyId === 'string' && /^[\x20-\x7e]+$/.test(bodyId)) headers['idempotency-key'] = bodyId
  } else if (key !== undefined) {
    headers['idempotency-key'] = key
  }
  const w = withAuth(a, headers, extra)
  return { kind: 'publish', method: 'POST', target: `/v1/channels/${seg.raw}/events${query(w.query)}`, headers: w.headers, body, channel: seg.decoded, sub: w.sub }
})

/** Integers and everything that is almost one. */
const intParam = fc.oneof(
  { weight: 12, arbitrary: fc.nat(12).map(String) },
  { weight: 1, arbitrary: fc.constantFrom('-1', '1.5', '1e400', '-0', '0x10', '1e3', '', ' 1', '1 ', 'NaN', 'Infinity', 'abc', '99999999999999999999999', '1000', '1001', '00', '+1', '%31') }
)

/** Mostly one value; now and then the parameter twice. */
const repeated = (a: fc.Arbitrary<string>): fc.Arbitrary<string[]> => fc.oneof({ weight: 8, arbitrary: a.map((v) => [v]) }, { weight: 1, arbitrary: fc.array(a, { minLength: 2, maxLength: 3 }) })
const historyReq: fc.Arbitrary<Req> = fc.record({ seg: segment, since: fc.option(repeated(intParam), { nil: undefined }), limit: fc.option(repeated(intParam), { nil: undefined }), a: auth, extra: extraQuery }).map(({ seg, since, limit, a, extra }) => {
  const parts = [...(since ?? []).map((s) => 'since=' + s), ...(limit ?? []).map((l) => 'limit=' + l), ...extra]
  const w = withAuth(a, {}, parts)
  const intOf = (vals: string[] | undefined): number | undefined => vals?.length === 1 && /^\d+$/.test(vals[0]) ? Number(vals[0]) : undefined
  return { kind: 'history', method: 'GET', target: `/v1/channels/${seg.raw}/events${query(w.query)}`, headers: w.headers, channel: seg.decoded, since: since === undefined ? 0 : intOf(since), limit: limit === undefined ? 100 : intOf(limit), sub: w.sub }
})

const presenceReq: fc.Arbitrary<Req> = fc.record({
  seg: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...PRESENCE_CHANNELS).map((c) => ({ raw: c, decoded: c })) }, { weight: 2, arbitrary: segment }),
  kind: fc.constantFrom('presence' as const, 'count' as const, 'whoami' as const),
  a: auth,
  extra: extraQuery
}).map(({ seg, kind, a, extra }) => {
  const w = withAuth(a, {}, extra)
  const path = kind === 'whoami' ? '/v1/whoami' : `/v1/channels/${seg.raw}/presence${kind === 'count' ? '/count' : ''}`
  return { kind, method: 'GET', target: path + query(w.query), headers: w.headers, channel: kind === 'whoami' ? undefined : seg.decoded, sub: w.sub }
})

/** Cursors: made like Herald's (positions that may or may not exist), and everything a cursor is not. */
const cursorArb = fc.oneof(
  { weight: 12, arbitrary: fc.array(fc.tuple(fc.constantFrom(...GOOD_CHANNELS), fc.oneof(fc.nat(12), fc.constant(Number.MAX_SAFE_INTEGER)), fc.oneof(fc.string({ minLength: 1, maxLength: 8 }), fc.constant('LIVE'))), { maxLength: 3 }).map((parts) => 'c1.' + Buffer.from(JSON.stringify(parts)).toString('base64url')) },
  { weight: 2, arbitrary: fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom<unknown>([['a', -1, 'e']], [['a', 1.5, 'e']], [['a', 1e20, 'e']], [['a', 1, '']], [['a', 1, 'e'.repeat(65)]], [['a b', 1, 'e']], [['a', 1]], [['a', 1, 'e', 4]], { a: 1 }, [null], [['__proto__', 1, 'e']])).map((v) => 'c1.' + Buffer.from(JSON.stringify(v) ?? 'null').toString('base64url')) },
  { weight: 2, arbitrary: fc.constantFrom('', 'c1.', 'c1', 'c2.W10', 'c1.!!!', 'c1.W10', 'c1.' + '_'.repeat(4000), 'c1.bnVsbA', 'c1.e30', 'C1.W10', 'c1.W1siYSIsMSwiZSJdXQ==') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) }
)

/** Timeouts that answer at once (a bad one is a 400): a poll never waits here (Infinity would: 30 s, the cap). */
const timeoutParam = fc.oneof({ weight: 8, arbitrary: fc.constantFrom('0', '0.0', '-0', '0e5', '0x0', '1e-9', '0.001', '%30') }, { weight: 1, arbitrary: fc.constantFrom('', '-1', 'abc', 'NaN', '1e400x', '-Infinity') })

const channelParams = fc.oneof(
  { weight: 12, arbitrary: fc.array(fc.oneof({ weight: 16, arbitrary: fc.constantFrom(...GOOD_CHANNELS) }, { weight: 1, arbitrary: fc.constantFrom(...BAD_CHANNELS, '') }), { minLength: 1, maxLength: 4 }) },
  { weight: 1, arbitrary: fc.constant([] as string[]) }
)

const pollReq: fc.Arbitrary<Req> = fc.record({ channels: channelParams, cursor: fc.option(cursorArb, { nil: undefined }), timeout: repeated(timeoutParam), a: auth, extra: extraQuery, resume: fc.boolean() }).map(({ channels, cursor, timeout, a, extra, resume }) => {
  const parts = [...channels.map((c) => 'channel=' + encode(c)), ...(cursor === undefined ? [] : ['cursor=' + encode(cursor)]), ...timeout.map((t) => 'timeout=' + t), ...extra]
  const w = withAuth(a, {}, parts)
  // The next poll: the same channels and token, no junk (a stray `cursor` parameter would make two).
  const next = withAuth(a, {}, [...channels.map((c) => 'channel=' + encode(c)), 'timeout=0'])
  return { kind: 'poll', method: 'GET', target: '/v1/poll' + query(w.query), headers: w.headers, channels, sub: w.sub, resume: resume ? '/v1/poll' + query(next.query) : undefined }
})

const sseReq: fc.Arbitrary<Req> = fc.record({ channels: channelParams, cursor: fc.option(cursorArb, { nil: undefined, freq: 3 }), lastEventId: fc.option(fc.oneof(cursorArb.filter((c) => /^[\x20-\x7e]*$/.test(c)), headerValue), { nil: undefined, freq: 3 }), a: auth, extra: extraQuery }).map(({ channels, cursor, lastEventId, a, extra }) => {
  const parts = [...channels.map((c) => 'channel=' + encode(c)), ...(cursor === undefined ? [] : ['cursor=' + encode(cursor)]), ...extra]
  const w = withAuth(a, { accept: 'text/event-stream', ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) }, parts)
  return { kind: 'sse', method: 'GET', target: '/v1/sse' + query(w.query), headers: w.headers, channels, sub: w.sub }
})

// ---------------------------------------------------------------- answers

interface Answer { status: number, contentType: string, text: string, json?: unknown }

const short = (text: string): string => text.length > 400 ? `${text.slice(0, 300)}… (${text.length} chars) …${text.slice(-60)}` : text
const describe = (r: Req): string => `${r.method} ${short(r.target)} headers=${short(JSON.stringify(r.headers))}${r.body === undefined ? '' : ' body=' + short(JSON.stringify(r.body))}`

/** Sends one request; an SSE stream is read up to its first message, then aborted. */
async function send (base: string, r: Req, epochs: Map<string, string>): Promise<Answer> {
  const controller = new AbortController()
  // Cursors made with the placeholder epoch LIVE get the channel's real epoch, so that resumes can succeed.
  const target = r.target.replace(/c1\.([A-Za-z0-9_-]+)/g, (whole, b64: string) => {
    try {
      const parts = JSON.parse(Buffer.from(b64, 'base64url').toString()) as unknown
      if (!Array.isArray(parts) || !parts.some((p) => Array.isArray(p) && p[2] === 'LIVE')) return whole
      return 'c1.' + Buffer.from(JSON.stringify(parts.map((p: unknown[]) => p[2] === 'LIVE' ? [p[0], p[1], epochs.get(p[0] as string) ?? 'none'] : p))).toString('base64url')
    } catch {
      return whole
    }
  })
  const res = await fetch(base + target, { method: r.method, headers: r.headers, body: r.body, signal: controller.signal })
  const contentType = res.headers.get('content-type') ?? ''
  if (r.kind === 'sse' && res.status === 200 && res.body !== null) {
    // Only the first message: the stream never ends by itself.
    const reader = res.body.getReader()
    const decoder = new TextDecoder()
    let text = ''
    const timer = setTimeout(() => controller.abort(), 5000)
    try {
      while (!text.includes('\n\n')) {
        const { done, value } = await reader.read()
        if (done) break
        text += decoder.decode(value, { stream: true })
      }
    } catch {} finally {
      clearTimeout(timer)
      controller.abort()
    }
    return { status: res.status, contentType, text }
  }
  const text = await res.text()
  let json: unknown
  try { json = JSON.parse(text) } catch {}
  return { status: res.status, contentType, text, json }
}

/** Every property of one answer; throws an AssertionError naming the request. */
function checkAnswer (r: Req, a: Answer): void {
  const what = `\nrequest: ${describe(r)}\nanswer: ${a.status} ${a.contentType} ${short(a.text)}`
  if (a.status >= 200 && a.status < 300) {
    checkSuccess(r, a, what)
    return
  }
  assert.ok(a.status >= 400 && a.status < 600, 'neither a 2xx nor an error status' + what)
  assert.match(a.contentType, /^application\/json/, 'an error without a JSON body' + what)
  const body = a.json as { statusCode: number, code: string } | undefined
  assert.ok(body !== undefined && SHAPES.error.Check(body), 'an error body that is not {statusCode, code, error, message}' + what)
  assert.ok(ERROR_CODES.includes(body.code), `error code ${body.code} is not one of ERROR_CODES` + what)
  assert.notEqual(body.code, INTERNAL, 'HERALD_ERR_INTERNAL: a bug' + what)
  assert.equal(body.statusCode, a.status, 'statusCode of the body differs from the HTTP status' + what)
  assert.equal(a.status, STATUS_OF.get(body.code), `docs/errors.md gives ${body.code} the status ${String(STATUS_OF.get(body.code))}` + what)
}

function checkSuccess (r: Req, a: Answer, what: string): void {
  const body = a.json as Record<string, any> | undefined
  switch (r.kind) {
    case 'publish':
      assert.equal(a.status, 201, what)
      assert.ok(SHAPES.publish.Check(body), 'not a PublishReply' + what)
      assert.equal(body!.channel, r.channel, 'a publish acknowledged for another channel' + what)
      assert.ok(body!.offset >= 1 && body!.epoch !== '', what)
      return
    case 'history': {
      assert.equal(a.status, 200, what)
      assert.ok(SHAPES.history.Check(body), 'not a HistoryReply' + what)
      const h = body as { channel: string, epoch: string, offset: number, earliest: number, truncated: boolean, events: Array<{ type: string, channel: string, offset: number, epoch: string }> }
      assert.equal(h.channel, r.channel, what)
      const offsets = h.events.map((e) => e.offset)
      assert.deepEqual(offsets, [...offsets].sort((x, y) => x - y), 'history events out of order' + what)
      assert.equal(new Set(offsets).size, offsets.length, 'an event twice in history' + what)
      for (const e of h.events) {
        assert.ok(e.channel === h.channel && e.epoch === h.epoch && e.offset <= h.offset, 'an event of another channel, epoch or beyond the newest offset' + what)
        if (r.since !== undefined) assert.ok(e.offset > r.since, 'an event at or before `since`' + what)
      }
      if (r.limit !== undefined) assert.ok(h.events.length <= r.limit, 'more events than `limit`' + what)
      return
    }
    case 'presence':
      assert.equal(a.status, 200, what)
      assert.ok(SHAPES.presence.Check(body), 'not a PresenceReply' + what)
      assert.equal(body!.channel, r.channel, what)
      assert.equal(body!.count.members, body!.members.length, what)
      return
    case 'count':
      assert.equal(a.status, 200, what)
      assert.ok(SHAPES.count.Check(body), 'not a PresenceCountReply' + what)
      assert.equal(body!.channel, r.channel, what)
      return
    case 'whoami':
      assert.equal(a.status, 200, what)
      assert.ok(SHAPES.whoami.Check(body), 'not a WhoAmIReply' + what)
      if (r.sub !== undefined) assert.equal(body!.sub, r.sub, what)
      return
    case 'poll': {
      assert.equal(a.status, 200, what)
      assert.ok(SHAPES.poll.Check(body), 'not a PollReply' + what)
      const asked = new Set(r.channels)
      for (const e of body!.events as Array<{ channel: string }>) assert.ok(asked.has(e.channel), 'an event of a channel not polled' + what)
      const cursor = body!.cursor as string
      assert.match(cursor, /^c2\./, what)
      const positions = decodeCursorText(cursor, asked)
      assert.ok(typeof positions !== 'string', 'the answer\'s cursor does not decode: ' + String(positions) + what)
      for (const c of asked) assert.ok(positions.has(c), `the answer's cursor does not carry channel ${c}` + what)
      return
    }
    case 'sse': {
      assert.equal(a.status, 200, what)
      assert.match(a.contentType, /^text\/event-stream/, what)
      const [first] = a.text.split('\n\n')
      const lines = first.split('\n')
      assert.equal(lines[0], 'retry: 1000', 'the stream does not open with its retry hint' + what)
      const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n')
      let frame: unknown
      try { frame = JSON.parse(data) } catch {}
      assert.ok(SHAPES.connected.Check(frame), 'the first message is not a `connected` frame' + what)
      if (r.sub !== undefined) assert.equal((frame as { sub: string }).sub, r.sub, what)
      return
    }
    case 'any':
      // Known routes only answer 2xx to what they document; an OPTIONS preflight is CORS's 204.
      assert.ok(r.method === 'OPTIONS' || r.method === 'HEAD' || r.method === 'GET' || r.method === 'POST', `a 2xx to ${r.method}` + what)
  }
}

// ---------------------------------------------------------------- runs


/** One Herald per property, with a little history; replaced after a failed run so shrinking starts clean. */
class Node {
  private current?: { herald: TestApp, epochs: Map<string, string> }
  constructor (private readonly t: TestContext) {}
  async get (): Promise<{ herald: TestApp, epochs: Map<string, string> }> {
    if (this.current === undefined) {
      const herald = await startHerald(this.t, { config: CONFIG })
      const epochs = new Map<string, string>()
      for (const channel of ['a', 'room:a', 'tiny:z', 'b:c']) {
        for (let i = 0; i < 4; i++) {
          const res = await publish(herald.url, channel, { seeded: i })
          assert.equal(res.status, 201)
          epochs.set(channel, res.body.epoch as string)
        }
      }
      this.current = { herald, epochs }
    }
    return this.current
  }

  async discard (): Promise<void> {
    const current = this.current
    this.current = undefined
    await current?.herald.app.close()
  }
}

/**
 * The time a property may take: 10 s (FUZZ_TIME_MS), within what is left of the file's 30 s budget (FUZZ_FILE_MS), but
 * at least 2 s. On an idle machine every property finishes its runs well within it; on a busy one the file still
 * ends in about half a minute, having run fewer cases.
 */
const FILE_DEADLINE = Date.now() + Number(process.env.FUZZ_FILE_MS ?? 30_000)
function timeLimit (): number {
  return Math.max(2000, Math.min(Number(process.env.FUZZ_TIME_MS ?? 10_000), FILE_DEADLINE - Date.now()))
}

/** Sends requests together (racing each other), with an SSE stream open in two presence channels if asked; checks it all. */
async function run (node: Node, reqs: Req[], opts: { presenceStream?: boolean } = {}): Promise<void> {
  const { herald, epochs } = await node.get()
  try {
    let stream: AbortController | undefined
    if (opts.presenceStream === true) {
      // A member in room:a and counts:y while the presence requests run.
      stream = new AbortController()
      const res = await fetch(`${herald.url}/v1/sse?channel=room:a&channel=counts:y`, { headers: { authorization: `Bearer ${FULL}` }, signal: stream.signal })
      assert.equal(res.status, 200)
      const reader = res.body!.getReader()
      let text = ''
      while (!text.includes('"subscribed"')) {
        const { done, value } = await reader.read()
        if (done) break
        text += Buffer.from(value).toString()
      }
    }
    const answers = await Promise.all(reqs.map(async (r) => await send(herald.url, r, epochs).then((a) => ({ r, a }), (err: Error) => ({ r, err }))))
    stream?.abort()
    for (const x of answers) {
      if ('err' in x) assert.fail(`no HTTP answer (${x.err.message}; ${String((x.err.cause as Error | undefined)?.message)})\nrequest: ${describe(x.r)}`)
      checkAnswer(x.r, x.a)
    }
    // The next poll from an answer's cursor: Herald must take back the cursor it gave.
    for (const x of answers) {
      if ('err' in x || x.r.resume === undefined || x.a.status !== 200) continue
      const cursor = (x.a.json as { cursor: string }).cursor
      const next: Req = { ...x.r, target: x.r.resume + (x.r.resume.includes('?') ? '&' : '?') + 'cursor=' + encode(cursor), resume: undefined }
      const a = await send(herald.url, next, epochs).catch((err: Error) => assert.fail(`no HTTP answer (${err.message})\nrequest: ${describe(next)}`))
      assert.equal(a.status, 200, `the next poll from the cursor of a 200 answer was refused\nfirst request: ${describe(x.r)}\nrequest: ${describe(next)}\nanswer: ${a.status} ${short(a.text)}`)
      checkAnswer(next, a)
    }
    const health = await fetch(`${herald.url}/healthz`)
    assert.equal(health.status, 200, 'GET /healthz after the run')
    let why: string | undefined
    const zero = await settled(async () => (why = await leftovers(herald.app, PRESENCE_CHANNELS)) === undefined, 3000)
    assert.ok(zero, `the node did not return to zero: ${why ?? ''}\nrequests:\n  ` + reqs.map(describe).join('\n  '))
  } catch (err) {
    await node.discard()
    throw err
  }
}

/**
 * Seeded and bounded: the shrinking of a failure stops at the time limit, still reporting the failure found. To
 * explore: FUZZ_SEED=<n> another seed, FUZZ_RUNS=<k> k times the runs, FUZZ_TIME_MS / FUZZ_FILE_MS more time.
 */
function params (seed: number, numRuns: number): fc.Parameters<[Req[]]> {
  return {
    seed: process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : seed,
    numRuns: Math.ceil(numRuns * Number(process.env.FUZZ_RUNS ?? 1)),
    includeErrorInReport: true,
    // A run takes milliseconds: one still going after 8 s hangs, and fails (the deadlines inside a run are 5 s).
    // Each property stops after its share of the file's time budget (what it ran counts, a failure found is reported).
    plugins: [fc.timeout(8000), fc.interruptAfterTimeLimit(timeLimit())]
  } as fc.Parameters<[Req[]]>
}

const batch = (req: fc.Arbitrary<Req>, max = 6): fc.Arbitrary<Req[]> => fc.array(req, { minLength: 1, maxLength: max })

// ---------------------------------------------------------------- properties

test('fuzz (seed 0x70b115): POST /v1/channels/:channel/events — body, content type, Idempotency-Key, channel path', async (t) => {
  const node = new Node(t)
  await fc.assert(fc.asyncProperty(batch(publishReq), async (reqs) => { await run(node, reqs) }), params(0x70b115, 100))
})

test('fuzz (seed 0x415702): GET /v1/channels/:channel/events — since, limit, channel path', async (t) => {
  const node = new Node(t)
  await fc.assert(fc.asyncProperty(batch(historyReq), async (reqs) => { await run(node, reqs) }), params(0x415702, 150))
})

test('fuzz (seed 0x9e5e7c): GET …/presence, …/presence/count and /v1/whoami, with a member present', async (t) => {
  const node = new Node(t)
  await fc.assert(fc.asyncProperty(batch(presenceReq), async (reqs) => { await run(node, reqs, { presenceStream: true }) }), params(0x9e5e7c, 100))
})

test('fuzz (seed 0x90115e): GET /v1/poll — channels, cursor, timeout', async (t) => {
  const node = new Node(t)
  await fc.assert(fc.asyncProperty(batch(pollReq), async (reqs) => { await run(node, reqs) }), params(0x90115e, 150))
})

test('fuzz (seed 0x55e5e5): GET /v1/sse — channels, cursor, Last-Event-ID (status and first message)', async (t) => {
  const node = new Node(t)
  await fc.assert(fc.asyncProperty(batch(sseReq, 4), async (reqs) => { await run(node, reqs) }), params(0x55e5e5, 100))
})

/** A request to any route with any method: only the generic properties of an answer apply (streams: `sse`). */
function anyReq (path: fc.Arbitrary<string>, methods: string[]): fc.Arbitrary<Req> {
  return fc.record({ method: fc.constantFrom(...methods), path, a: auth, preflight: fc.boolean() }).map(({ method, path, a, preflight }) => {
    const headers: Record<string, string> = method === 'POST' ? { 'content-type': 'application/json' } : {}
    if (method === 'OPTIONS' && preflight) Object.assign(headers, { origin: 'https://example.test', 'access-control-request-method': 'POST' })
    const w = withAuth(a, headers, [])
    const kind: Kind = path.startsWith('/v1/sse') && method === 'GET' ? 'sse' : 'any'
    return { kind, method, target: path + (w.query.length === 0 ? '' : (path.includes('?') ? '&' : '?') + w.query.join('&')), headers: w.headers, body: method === 'POST' ? '{"data":1}' : undefined, channels: ['a'], sub: w.sub }
  })
}

const ROUTES = ['/v1/whoami', '/v1/poll?channel=a&timeout=0', '/v1/sse?channel=a', '/v1/ws', '/v1/channels/a/events', '/v1/channels/room:a/presence',
  '/v1/channels/room:a/presence/count', '/v1/channels', '/v1/', '/v1', '/V1/whoami', '/v1/whoami/', '/v1//whoami', '/healthz', '/readyz', '/openapi.json', '/v1/channels//events']

test('fuzz (seed 0x3e7a0d): every route with every method', async (t) => {
  const node = new Node(t)
  const path = fc.oneof(fc.constantFrom(...ROUTES), segment.map((s) => `/v1/channels/${s.raw}/events`))
  await fc.assert(fc.asyncProperty(batch(anyReq(path, ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])), async (reqs) => { await run(node, reqs) }), params(0x3e7a0d, 60))
})

test('fuzz (seed 0x9c7e5c): malformed percent-encoding in paths and queries', async (t) => {
  const node = new Node(t)
  const badEscape = fc.constantFrom('%', '%%', '%zz', '%4', '%E0%A4%A', '%C0%AF', '%ED%A0%80', '%FF', '%00', 'a%', '%2', '%u0041')
  const path = fc.oneof(
    fc.tuple(fc.oneof(segment.map((s) => s.raw), badEscape, fc.tuple(fc.constantFrom(...GOOD_CHANNELS), badEscape).map(([c, e]) => c + e)), fc.constantFrom('/events', '/presence', '/presence/count')).map(([seg, tail]) => `/v1/channels/${seg}${tail}`),
    fc.tuple(fc.constantFrom('/v1/whoami?', '/v1/channels/a/events?', '/v1/poll?timeout=0&channel=a&', '/v1/sse?channel=a&'), fc.constantFrom('since', 'limit', 'channel', 'cursor', 'x'), badEscape).map(([p, k, e]) => p + k + '=' + e),
    badEscape.map((e) => '/' + e)
  )
  await fc.assert(fc.asyncProperty(batch(anyReq(path, ['GET', 'POST'])), async (reqs) => { await run(node, reqs) }), params(0x9c7e5c, 40))
})

// Within the documented limits: up to 128 channels (MAX_SUBSCRIPTIONS) of up to 128 characters on a long-poll or a
// stream, and the next poll from the answer's cursor; a cursor over its 16384 characters is refused as
// HERALD_ERR_BAD_CURSOR "too long".
test('fuzz (seed 0x1a76e5): long-polls and streams at the documented size limits', async (t) => {
  const node = new Node(t)
  const names = (n: number, len: number): string[] => Array.from({ length: n }, (_, i) => (String(i).padStart(3, '0') + 'c'.repeat(len)).slice(0, Math.max(len, 3)))
  const many = fc.tuple(fc.integer({ min: 1, max: 128 }), fc.integer({ min: 1, max: 128 })).map(([n, len]) => names(n, len))
  const poll = many.map((channels): Req => {
    const target = '/v1/poll?timeout=0&' + channels.map((c) => 'channel=' + c).join('&')
    return { kind: 'poll', method: 'GET', target, headers: { authorization: `Bearer ${FULL}` }, channels, sub: 'tester', resume: target }
  })
  const sse = many.map((channels): Req => ({ kind: 'sse', method: 'GET', target: '/v1/sse?' + channels.map((c) => 'channel=' + c).join('&'), headers: { authorization: `Bearer ${FULL}` }, channels, sub: 'tester' }))
  const longCursor = anyReq(fc.tuple(fc.constantFrom('/v1/poll', '/v1/sse'), fc.integer({ min: 1000, max: 17000 })).map(([route, n]) => route + '?timeout=0&channel=a&cursor=c1.' + 'A'.repeat(n)), ['GET'])
  await fc.assert(fc.asyncProperty(batch(fc.oneof(poll, sse, longCursor), 2), async (reqs) => { await run(node, reqs) }), params(0x1a76e5, 15))
})

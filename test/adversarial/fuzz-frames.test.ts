import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import fc from 'fast-check'
import WebSocket from 'ws'
import { Compile } from 'typebox/compile'
import type { TSchema } from 'typebox'
import { ERROR_CODES } from '../../src/errors.js'
import { defaultConfig, type HeraldConfig } from '../../src/config.js'
import { CloseCodes } from '../../src/protocol/codes.js'
import { ServerFrames } from '../../src/protocol/frames.js'
import { clientFrameCheckers, type ClientFrameType } from '../../src/protocol/client-frames.js'
import { SECRET, startHerald, token, type Frame, type TestApp } from '../helper.js'
import { leftovers, settled } from '../support/fuzz.js'

// Property-based fuzzing of the WebSocket protocol (docs/protocol.md), on real sockets against a real Herald with the
// in-process bus. Every client frame type — subscribe, unsubscribe, publish, ping, presence, refresh — is sent
// well-formed and mutated (wrong types, missing and extra fields, prototype keys, huge strings, deep-but-legal
// nesting, unicode, odd numbers, negative and huge offsets, long ids), next to unknown types, non-object JSON,
// non-JSON text and binary frames, from one to three connections (two token subjects) at once.
//
// After every run:
//  - every frame the server sent is JSON and matches its schema in src/protocol/frames.ts (the tables of
//    docs/protocol.md are checked against those schemas);
//  - every text frame carrying an `id` of 1–128 characters got exactly one answer carrying that id: an `ack` or an
//    `error` — a `ping` is answered by its `pong` (the frame table documents that; the deep-json test relies on it).
//    Characters are code points, as JSON Schema's maxLength (and so the FrameId schema) counts them;
//  - every `error` frame has a code of ERROR_CODES, and never HERALD_ERR_INTERNAL (docs/errors.md: "A bug");
//  - the server closed no socket, or only with a documented close code — 1011 is documented as "a bug, logged"
//    (after a documented close, the frames in flight are owed at most one answer each);
//  - once the clients are gone the node is back to zero: connections, hub subscriptions, hub channels and presence
//    entries (waited for with `until`).
// An uncaught exception anywhere fails the file by itself.
//
// Frames go out in bursts corked into one TCP write, so the server handles a burst back to back before any of its
// asynchronous work (subscribes, publishes, presence, token checks) completes: races between frames happen on every
// run instead of when the scheduler allows. Some steps wait a turn of the event loop first. Answers are awaited on
// events: a ping barrier after the burst (answers leave in order, so every frame answered or refused as it is read
// must be answered by then), then the answers that wait on the bus, presence or a token, up to a 5 s deadline.
//
// Each property is seeded, the seed is in its name, and fast-check prints the counterexample (and its path) of a
// failure; the failure message lists the exact frames sent. See `params` for exploring further (FUZZ_* variables).

/** Limits out of the way: every run opens connections and sends bursts (WS_RATE / CONNECT_RATE are tested elsewhere). */
const LIMITS = { ...defaultConfig().limits, wsRate: 100_000, wsBurst: 100_000, connectRate: 100_000, connectBurst: 100_000 }

/** Namespaces that send frames through every option's code: presence, join/leave, counts only, caps, policies. */
const CONFIG: Partial<HeraldConfig> = {
  limits: LIMITS,
  maxSubscriptions: 6,
  presence: { ttlSeconds: 30, batchMs: 20 },
  namespaces: {
    namespaces: {
      room: { presence: true },
      live: { presence: true, joinLeave: true },
      counts: { presence: true, presenceCountsOnly: true },
      full: { presence: true, maxMembers: 1 },
      tiny: { maxSubscribers: 1, historySize: 2 },
      quiet: { clientPublish: false },
      drop: { backpressure: 'drop-oldest' },
      merge: { backpressure: 'coalesce', coalesceKey: 'k' }
    }
  }
}

const PRESENCE_CHANNELS = ['room:a', 'room:b', 'live:x', 'counts:y', 'full:m']

/** Close codes of docs/protocol.md, but 1011: "the server failed handling this connection's input (a bug, logged)". */
const DOCUMENTED_CLOSES = new Set<number>(Object.values(CloseCodes).filter((code) => code !== CloseCodes.INTERNAL_ERROR))
const INTERNAL = 'HERALD_ERR_INTERNAL'

// ---------------------------------------------------------------- tokens

/** HS256 by hand: claims fast-jwt's signer would refuse to produce (a fractional exp, an empty sub…). */
function sign (claims: object): string {
  const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url')
  const body = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims)
  return body + '.' + createHmac('sha256', SECRET).update(body).digest('base64url')
}
const nowSeconds = Math.floor(Date.now() / 1000)
const LIMITED_CLAIMS = { sub: 'limited', subscribe: ['room:*', 'live:*', 'full:*', 'a*'], publish: ['room:*'], info: { name: 'Ünïcødé 😀', tags: ['x'] } }

/** The tokens clients connect with: everything allowed, or a few patterns (FORBIDDEN paths) and an `info` claim. */
const CLIENT_TOKENS = [token(), token(LIMITED_CLAIMS)]

function unsigned (payload: object): string {
  const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url')
  return b64({ alg: 'none', typ: 'JWT' }) + '.' + b64(payload) + '.'
}

/** Tokens of `refresh` frames: good ones for either subject, other subjects, expired, forged, malformed claims. */
const REFRESH_TOKENS: string[] = [
  token(),
  token(LIMITED_CLAIMS),
  token({ subscribe: [], publish: [] }),
  token({ subscribe: ['room:*'], publish: [] }),
  token({ sub: 'someone-else' }),
  sign({ sub: 'tester', subscribe: ['*'], publish: ['*'], exp: nowSeconds - 60 }),
  sign({ sub: 'tester', subscribe: ['*'], publish: ['*'], exp: 32503680000 }), // year 3000: past setTimeout's range
  sign({ sub: 'tester', subscribe: ['*'], publish: ['*'], exp: 32503680000.5 }),
  sign({ sub: 'tester', subscribe: ['*'], publish: ['*'] }), // no exp at all
  sign({ sub: 'tester', subscribe: ['*'], publish: ['*'], nbf: nowSeconds + 3600 }),
  sign({ sub: 'tester', subscribe: 'room:*', publish: ['*'] }),
  sign({ sub: 'tester', subscribe: [5, null], publish: ['*'] }),
  sign({ sub: '', subscribe: ['*'] }),
  sign({ sub: 'x'.repeat(300) }),
  sign({ subscribe: ['*'] }),
  sign({ sub: 'tester', subscribe: ['*'], publish: ['*'], info: JSON.parse('{"__proto__":{"polluted":true}}') as unknown }),
  token({}, { key: 'another-secret-0123456789abcdef' }),
  unsigned({ sub: 'tester', subscribe: ['*'], publish: ['*'] }),
  'not-a-jwt',
  'a.b.c',
  '...',
  token().slice(0, -3)
]

// ---------------------------------------------------------------- values

/** A JSON token written as it is (numbers JSON.stringify cannot produce: 1e400, -0, 30 digits…). */
class Raw {
  constructor (readonly text: string) {}
  [fc.toStringMethod] (): string { return `raw(${this.text})` }
}

/** A JSON object as an ordered list of pairs: keys may repeat, and `__proto__` is an ordinary own key. */
class Obj {
  constructor (readonly pairs: Array<[string, unknown]>) {}
  [fc.toStringMethod] (): string { return serialize(this, 'E') }
}

/** Stands for the current epoch of the frame's channel, looked up when the frame is sent (so resumes can succeed). */
const LIVE_EPOCH = Symbol('live-epoch')

function serialize (v: unknown, epoch: string): string {
  if (v === LIVE_EPOCH) return JSON.stringify(epoch)
  if (v instanceof Raw) return v.text
  if (v instanceof Obj) return '{' + v.pairs.map(([k, x]) => JSON.stringify(k) + ':' + serialize(x, epoch)).join(',') + '}'
  if (Array.isArray(v)) return '[' + v.map((x) => serialize(x, epoch)).join(',') + ']'
  if (v !== null && typeof v === 'object') return '{' + Object.keys(v).map((k) => JSON.stringify(k) + ':' + serialize((v as Record<string, unknown>)[k], epoch)).join(',') + '}'
  return JSON.stringify(v) ?? 'null'
}

const GOOD_CHANNELS = [
  'a', 'b:c', 'room:a', 'room:b', 'live:x', 'counts:y', 'full:m', 'tiny:z', 'quiet:q', 'drop:d', 'merge:m',
  '__proto__:p', 'constructor', 'toString:x', 'prototype', ':', '::', '-', '_.-@:', 'a'.repeat(128), 'room:' + 'z'.repeat(123)
]
const BAD_CHANNELS = ['', ' ', 'a b', 'a'.repeat(129), 'room:' + 'z'.repeat(124), 'a*', '*', '{a}', 'ch/an', 'é', '😀', 'a\u0000', 'a\n', '%41', 'room:a ', '\ud800', 'a\u202e']

const rawNumber = fc.constantFrom('1e400', '-1e400', '-0', '1E+2', '0.0', '123456789012345678901234567890', '1e-400', '0e0', '9007199254740993', '-9007199254740993').map((t) => new Raw(t))
const specialString = fc.constantFrom('', 'NaN', 'Infinity', '-Infinity', '-0', '1e400', 'null', 'undefined', 'true', '__proto__', 'constructor',
  'prototype', 'hasOwnProperty', '\u0000', '\uFEFF', '\u202E', '😀', '\ud800', '\udfff\ud800', 'e\u0301', '<script>', '%00', '${x}', '\\', '"')
/** Long strings, but frames stay under MAX_FRAME_BYTES here (the limits test goes past it). */
const hugeString = fc.tuple(fc.constantFrom('x', 'é', '😀', '[', '{', '"', '\\', '\u0001'), fc.integer({ min: 1000, max: 8000 })).map(([c, n]) => c.repeat(n))
/** Arrays and objects nested up to 60 deep: within the 64 levels a frame may have (frame and `since` included). */
const deepLegal = fc.tuple(fc.integer({ min: 2, max: 60 }), fc.boolean(), fc.jsonValue({ maxDepth: 0 })).map(([depth, arrays, inner]) => {
  let v: unknown = inner
  for (let i = 0; i < depth; i++) v = arrays || i % 2 === 0 ? [v] : new Obj([['k', v]])
  return v
})
const protoValue = fc.constantFrom(
  new Obj([['__proto__', new Obj([['polluted', true]])]]),
  new Obj([['constructor', new Obj([['prototype', new Obj([['polluted', true]])]])]]),
  new Obj([['__proto__', null]]),
  new Obj([['prototype', 1], ['toString', 'x'], ['valueOf', []], ['hasOwnProperty', {}]])
)
/** Any value in a place that wants something else. */
const junk: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.oneof(fc.constant(null), fc.boolean(), fc.integer(), fc.double(), fc.constantFrom(-1, -0, 2 ** 53, 2 ** 53 + 2, Number.MAX_VALUE, 1e-300, 1.5, -1e21)) },
  { weight: 3, arbitrary: specialString },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: hugeString },
  { weight: 2, arbitrary: rawNumber },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: deepLegal },
  { weight: 1, arbitrary: protoValue }
)

/** Ids the server must echo: 1–128 UTF-16 units (so 1–128 characters however they are counted). */
const goodId = fc.oneof(
  { weight: 4, arbitrary: fc.string({ minLength: 1, maxLength: 12 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 64 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 16 }).filter((s) => s.length <= 128) },
  { weight: 2, arbitrary: fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '0', ' ', '\u0000', '\ud800', '\udfff\ud800', '😀', 'null') },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 128 }).map((n) => 'i'.repeat(n)) }
)
/** Ids outside the documented range, or not strings: nothing is promised about their answers. */
const badId = fc.oneof(fc.constant(''), fc.integer({ min: 129, max: 4000 }).map((n) => 'L'.repeat(n)), junk.filter((v) => typeof v !== 'string'))

// ---------------------------------------------------------------- frames

/** `type` as it should be, or mutated: case, spaces, prototype names, wrong JSON types, missing. */
function typeField (type: string): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 30, arbitrary: fc.constant(type) },
    { weight: 1, arbitrary: fc.constantFrom(type.toUpperCase(), type + ' ', ' ' + type, type.slice(0, -1), type + '\u0000', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '') },
    { weight: 1, arbitrary: junk },
    { weight: 1, arbitrary: fc.constant(OMIT) }
  )
}

const OMIT = Symbol('omit')

/** A field's good value, mostly; now and then a wrong one; optional fields often absent. */
function field (good: fc.Arbitrary<unknown>, optional: boolean): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 12, arbitrary: good },
    { weight: 1, arbitrary: junk },
    { weight: optional ? 5 : 1, arbitrary: fc.constant(OMIT) }
  )
}

const extraKey = fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'extra', 'ID', 'Type', 'data', 'since', 'channel', 'token', 'event', 'id', 'type', '😀', '')

/** A frame of `type` with the given fields, each possibly mutated, maybe extra keys, in any order. */
function frameOf (type: string, fields: Record<string, { good: fc.Arbitrary<unknown>, optional: boolean }>): fc.Arbitrary<Obj> {
  const parts: Record<string, fc.Arbitrary<unknown>> = { type: typeField(type) }
  for (const [name, f] of Object.entries(fields)) parts[name] = field(f.good, f.optional)
  return fc.tuple(
    fc.record(parts),
    fc.oneof({ weight: 10, arbitrary: fc.constant([] as Array<[string, unknown]>) }, { weight: 1, arbitrary: fc.array(fc.tuple(extraKey, junk), { minLength: 1, maxLength: 3 }) }),
    fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) })
  ).map(([values, extras, shuffle]) => {
    const pairs: Array<[string, unknown]> = Object.entries(values).filter(([, v]) => v !== OMIT)
    pairs.push(...extras)
    if (shuffle) pairs.reverse()
    return new Obj(pairs)
  })
}

function channelArb (pool: string[] = GOOD_CHANNELS): fc.Arbitrary<string> {
  return fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...pool) }, { weight: 1, arbitrary: fc.constantFrom(...BAD_CHANNELS) })
}

const idArb = fc.oneof({ weight: 8, arbitrary: goodId }, { weight: 1, arbitrary: badId })

const position = fc.oneof(
  { weight: 3, arbitrary: fc.record({ offset: fc.integer({ min: 0, max: 12 }), epoch: fc.constant(LIVE_EPOCH as unknown) }) },
  { weight: 2, arbitrary: fc.record({ offset: fc.oneof(fc.nat(20), fc.constantFrom(2 ** 53 - 1, 1e300) as fc.Arbitrary<number>), epoch: fc.string({ minLength: 1, maxLength: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ offset: fc.oneof(junk, fc.constantFrom(-1, 1.5, new Raw('1e400'), 'NaN', '1')), epoch: fc.oneof(junk, fc.constantFrom('', 'e'.repeat(65))) }) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(5), fc.array(fc.tuple(extraKey, junk), { minLength: 1, maxLength: 2 })).map(([offset, extras]) => new Obj([['offset', offset], ['epoch', LIVE_EPOCH], ...extras])) }
)

const publishData = fc.oneof(
  { weight: 6, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constantFrom('a', 'b', 1, null), v: fc.nat() }) },
  { weight: 1, arbitrary: deepLegal },
  { weight: 1, arbitrary: hugeString },
  { weight: 1, arbitrary: protoValue },
  { weight: 1, arbitrary: rawNumber }
)

const eventName = fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fc.constantFrom('message', '__proto__', 'e'.repeat(128), '😀'))

function subscribeFrame (pool?: string[]): fc.Arbitrary<Obj> {
  return frameOf('subscribe', { channel: { good: channelArb(pool), optional: false }, since: { good: position, optional: true }, id: { good: idArb, optional: true } })
}
function unsubscribeFrame (pool?: string[]): fc.Arbitrary<Obj> {
  return frameOf('unsubscribe', { channel: { good: channelArb(pool), optional: false }, id: { good: idArb, optional: true } })
}
function publishFrame (pool?: string[]): fc.Arbitrary<Obj> {
  return frameOf('publish', { channel: { good: channelArb(pool), optional: false }, data: { good: publishData, optional: false }, event: { good: eventName, optional: true }, id: { good: idArb, optional: true } })
}
const pingFrame = frameOf('ping', { id: { good: idArb, optional: true } })
const presenceFrame = frameOf('presence', { channel: { good: channelArb([...PRESENCE_CHANNELS, 'a', 'tiny:z']), optional: false }, id: { good: idArb, optional: true } })
const refreshFrame = frameOf('refresh', { token: { good: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...REFRESH_TOKENS) }, { weight: 1, arbitrary: fc.constantFrom('', 'x'.repeat(16385)) }), optional: false }, id: { good: idArb, optional: true } })

/** JSON objects whose `type` is not a frame type (or no string at all), with random keys and maybe an id. */
const unknownFrame = fc.tuple(
  fc.oneof(fc.string({ maxLength: 16 }), fc.constantFrom('Subscribe', 'PING', 'ack', 'event', 'error', 'pong', 'connected', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf'), junk),
  fc.option(idArb, { nil: OMIT }),
  fc.array(fc.tuple(fc.oneof(extraKey, fc.string({ maxLength: 8 })), junk), { maxLength: 4 })
).map(([type, id, extras]) => new Obj([['type', type], ...(id === OMIT ? [] : [['id', id] as [string, unknown]]), ...extras]))

/** Well-formed JSON that is not an object: a frame is a JSON object with a `type`. */
const nonObjectJson = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).filter((v) => v === null || typeof v !== 'object' || Array.isArray(v)),
  fc.constantFrom<unknown>([], [{ type: 'ping', id: 'in-an-array' }], 'ping', 0, null, true),
  rawNumber
)

/** Text that is not JSON at all. */
const notJson = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.constantFrom('', ' ', '{', '}', '[', 'undefined', 'NaN', "{'type':'ping'}", '{"type":"ping",}', '\uFEFF{"type":"ping","id":"bom"}',
    '{"type":"ping" "id":"x"}', '{"type":"ping","id":"x"}{"type":"ping"}', '{"type":"ping","id":"x"} trailing', '{"type":"ping","id":"\\ud800\\"}', '01', '.5', '+1', '0x10', 'true false'),
  fc.tuple(pingFrame, fc.nat()).map(([f, n]) => { const t = serialize(f, 'E'); return t.slice(0, Math.max(1, n % t.length)) })
)

// ---------------------------------------------------------------- scenarios

type Payload = { kind: 'json', value: unknown } | { kind: 'text', text: string } | { kind: 'binary', bytes: Uint8Array }
interface Step { client: number, payload: Payload, pace: boolean }
interface Scenario { tokens: number[], steps: Step[] }

/** Frames under MAX_FRAME_BYTES (64 KiB): the frames past it have their own property below. */
const json = (a: fc.Arbitrary<unknown>): fc.Arbitrary<Payload> =>
  a.filter((value) => Buffer.byteLength(serialize(value, 'E'.repeat(16))) <= 60_000).map((value) => ({ kind: 'json' as const, value }))

function scenario (payload: fc.Arbitrary<Payload>, opts: { maxClients?: number, maxSteps?: number, paced?: number } = {}): fc.Arbitrary<Scenario> {
  return fc.record({
    tokens: fc.array(fc.nat(CLIENT_TOKENS.length - 1), { minLength: 1, maxLength: opts.maxClients ?? 2 }),
    steps: fc.array(fc.record({
      client: fc.nat(3),
      payload,
      // Most frames leave in one burst (handled back to back, racing each other); some wait for a turn of the loop.
      pace: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, { weight: opts.paced ?? 2, arbitrary: fc.constant(true) })
    }), { minLength: 1, maxLength: opts.maxSteps ?? 20, size: 'max' })
  })
}

/** Code points, as JSON Schema's maxLength (and so the FrameId schema) counts characters. */
function qualifies (id: string): boolean {
  const n = [...id].length
  return n >= 1 && n <= 128
}

/** The id the server must echo for this text frame, read the way the server reads it (JSON.parse, own key). */
function expectedId (text: string): string | undefined {
  // docs/protocol.md: a frame refused before it is read (over MAX_FRAME_BYTES, or nested past 64 levels) is
  // answered with an error frame that cannot carry its id.
  if (Buffer.byteLength(text) > MAX_FRAME_BYTES) return undefined
  let v: unknown
  try { v = JSON.parse(text) } catch { return undefined }
  if (depthOf(v) > 64) return undefined
  if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, 'id')) return undefined
  const id = (v as { id: unknown }).id
  return typeof id === 'string' && qualifies(id) ? id : undefined
}

const MAX_FRAME_BYTES = defaultConfig().maxFrameBytes
const LATER: readonly string[] = ['subscribe', 'publish', 'presence', 'refresh']

function depthOf (v: unknown): number {
  if (v === null || typeof v !== 'object') return 0
  let deepest = 0
  for (const x of Object.values(v)) deepest = Math.max(deepest, depthOf(x))
  return deepest + 1
}

/**
 * Whether a frame's answer may wait on something (the bus, presence, a token check): a valid subscribe, publish,
 * presence or refresh frame, by the protocol's schemas. Every other frame is answered, or refused, as it is read.
 */
function mayAnswerLater (text: string): boolean {
  if (Buffer.byteLength(text) > MAX_FRAME_BYTES) return false
  let v: unknown
  try { v = JSON.parse(text) } catch { return false }
  if (v === null || typeof v !== 'object' || Array.isArray(v) || depthOf(v) > 64) return false
  const type = (v as { type?: unknown }).type
  return typeof type === 'string' && LATER.includes(type) && clientFrameCheckers[type as ClientFrameType].Check(v)
}

function channelOf (v: unknown): string | undefined {
  if (!(v instanceof Obj)) return undefined
  const last = [...v.pairs].reverse().find(([k]) => k === 'channel')
  return typeof last?.[1] === 'string' ? last[1] : undefined
}

const short = (text: string): string => text.length > 300 ? `${text.slice(0, 200)}… (${text.length} chars) …${text.slice(-60)}` : text
const isAnswer = (f: Frame): boolean => f.type === 'ack' || f.type === 'error' || f.type === 'pong'


const frameCheckers = new Map(Object.entries(ServerFrames).map(([type, schema]) => [type, Compile(schema as TSchema)]))

/**
 * A bare `ws` client that records what the server sends. Unlike the helper's WsClient it throws nothing from its
 * socket listeners: a frame that is not JSON, or does not match its schema, is a violation of the property, so
 * fast-check can shrink it like any other.
 */
class FuzzClient {
  readonly frames: Frame[] = []
  readonly violations: string[] = []
  closed: { code: number, reason: string } | null = null
  private readonly closing: Promise<void>
  private waiters: Array<() => void> = []

  private constructor (readonly socket: WebSocket) {
    socket.on('message', (data, isBinary) => {
      const text = data.toString()
      let frame: Frame
      try {
        frame = JSON.parse(text) as Frame
      } catch {
        this.violations.push(`a ${isBinary ? 'binary' : 'text'} frame that is not JSON: ${short(text)}`)
        return
      }
      const checker = frameCheckers.get(String((frame as Frame | null)?.type))
      if (isBinary) this.violations.push(`a binary frame: ${short(text)}`)
      if (checker === undefined) this.violations.push(`a frame of unknown type: ${short(text)}`)
      else if (!checker.Check(frame)) {
        const first = checker.Errors(frame)[0]
        this.violations.push(`a ${String((frame as Frame).type)} frame that does not match its schema (${first?.instancePath ?? ''} ${first?.message ?? ''}): ${short(text)}`)
      }
      this.frames.push(frame)
      this.wake()
    })
    this.closing = new Promise((resolve) => {
      socket.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; this.wake(); resolve() })
    })
    socket.on('error', () => {})
  }

  static async connect (wsUrl: string, tok: string): Promise<FuzzClient> {
    const socket = new WebSocket(`${wsUrl}/v1/ws`, { headers: { authorization: `Bearer ${tok}` } })
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('error', reject)
      socket.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${String(res.statusCode)}`)))
    })
    return new FuzzClient(socket)
  }

  /** Resolves at the next frame or close. */
  async changed (): Promise<void> { await new Promise<void>((resolve) => this.waiters.push(resolve)) }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  /** Closes from this side and waits for the close handshake (or cuts the socket if the server never answers it). */
  async close (): Promise<void> {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close(1000)
    const cut = setTimeout(() => this.socket.terminate(), 3000)
    await this.closing
    clearTimeout(cut)
  }
}

/** Waits until `check` holds, re-checking whenever a client receives a frame or closes; false at the deadline. */
async function received (clients: FuzzClient[], check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!check()) {
    const left = deadline - Date.now()
    if (left <= 0) return false
    let timer: NodeJS.Timeout | undefined
    await Promise.race([...clients.map(async (c) => { await c.changed() }), new Promise((resolve) => { timer = setTimeout(resolve, left) })])
    clearTimeout(timer)
  }
  return true
}

/** One Herald per property, replaced after a failed run so that shrinking never inherits a polluted node. */
class Node {
  private current?: TestApp
  constructor (private readonly t: TestContext) {}
  async get (): Promise<TestApp> {
    this.current ??= await startHerald(this.t, { config: CONFIG })
    return this.current
  }

  async discard (): Promise<void> {
    const app = this.current
    this.current = undefined
    await app?.app.close()
  }
}

/** Sends a scenario and checks every property; throws an AssertionError naming the frames sent. */
async function run (node: Node, sc: Scenario): Promise<void> {
  const herald = await node.get()
  try {
    await check(herald, sc)
  } catch (err) {
    await node.discard()
    throw err
  }
}

async function check ({ app, wsUrl }: TestApp, sc: Scenario): Promise<void> {
  const clients = await Promise.all(sc.tokens.map(async (i) => await FuzzClient.connect(wsUrl, CLIENT_TOKENS[i])))
  const expected = clients.map(() => new Map<string, number>())
  /** Ids of frames whose answer may come after the barrier below (they wait on the bus, presence or a token check). */
  const late = clients.map(() => new Set<string>())
  const log: string[] = []
  // The frames as sent: JSON payloads rendered with the current epoch of their channel (looked up first, so that
  // nothing waits between the frames of a burst).
  const epochs = new Map<string, string>()
  for (const step of sc.steps) {
    if (step.payload.kind !== 'json') continue
    const channel = channelOf(step.payload.value) ?? 'a'
    if (!epochs.has(channel)) epochs.set(channel, (await app.herald.broker.history(channel, { since: 0, limit: 0 }).catch(() => ({ top: { epoch: 'none' } }))).top.epoch)
  }
  const raw = (c: FuzzClient): { cork: () => void, uncork: () => void } | null => (c.socket as unknown as { _socket: { cork: () => void, uncork: () => void } | null })._socket
  const uncorkAll = (): void => { for (const c of clients) raw(c)?.uncork() }
  try {
    // A burst is corked into one TCP write, so the server reads its frames in one chunk and handles them back to
    // back, before any of their asynchronous work: the races happen every time, not when the scheduler allows.
    for (const c of clients) raw(c)?.cork()
    for (const step of sc.steps) {
      const ci = step.client % clients.length
      const client = clients[ci]
      if (step.pace) {
        uncorkAll()
        await new Promise((resolve) => setImmediate(resolve))
        for (const c of clients) raw(c)?.cork()
      }
      const p = step.payload
      if (p.kind === 'binary') {
        client.socket.send(p.bytes, { binary: true })
        log.push(`client ${ci} binary: ${short(Buffer.from(p.bytes).toString('hex'))}`)
        continue
      }
      const text = p.kind === 'text' ? p.text : serialize(p.value, epochs.get(channelOf(p.value) ?? 'a') ?? 'none')
      client.socket.send(text)
      log.push(`client ${ci}${step.pace ? ' (after a turn)' : ''}: ${short(JSON.stringify(text))}`)
      const id = expectedId(text)
      if (id !== undefined) expected[ci].set(id, (expected[ci].get(id) ?? 0) + 1)
      if (id !== undefined && mayAnswerLater(text)) late[ci].add(id)
    }
    uncorkAll()
    const answers = (ci: number, id: string): number => clients[ci].frames.filter((f) => isAnswer(f) && f.id === id).length
    const missing = (which: 'all' | 'sync'): string[] => clients.flatMap((c, ci) => c.closed !== null ? [] : [...expected[ci]].filter(([id, n]) => (which === 'all' || !late[ci].has(id)) && answers(ci, id) < n).map(([id]) => `client ${ci} id ${JSON.stringify(id)}`))
    // Barrier: a ping after everything. Answers leave in order, so once its pong is in, every frame refused or
    // answered without waiting on anything has its answer in too; only the others get more time.
    const barriers = clients.map((c, ci) => {
      const id = `\u0001barrier ${ci}`
      if (c.socket.readyState === WebSocket.OPEN) c.socket.send(JSON.stringify({ type: 'ping', id }))
      return id
    })
    await received(clients, () => clients.every((c, ci) => c.closed !== null || c.frames.some((f) => f.type === 'pong' && f.id === barriers[ci])), 5000)
    if (missing('sync').length === 0) await received(clients, () => missing('all').length === 0, 5000)
    const sent = '\nframes sent:\n  ' + log.join('\n  ')
    for (const [ci, c] of clients.entries()) assert.deepEqual(c.violations, [], `client ${ci} received frames outside the protocol` + sent)
    const unanswered = missing('all')
    assert.deepEqual(unanswered, [], 'frames with an id got no answer (ack/error/pong) carrying it' + sent + '\nreceived:\n' + clients.map((c, ci) => `client ${ci}: ${short(JSON.stringify(c.frames))}`).join('\n'))
    for (const [ci, c] of clients.entries()) {
      const received = `\nclient ${ci} received: ${short(JSON.stringify(c.frames))}`
      if (c.closed !== null) assert.ok(DOCUMENTED_CLOSES.has(c.closed.code), `client ${ci} closed by the server with ${c.closed.code} ${c.closed.reason}` + sent + received)
      for (const f of c.frames) {
        if (f.type !== 'error') continue
        assert.ok(ERROR_CODES.includes(f.code as string), `error code ${String(f.code)} is not in ERROR_CODES: ${JSON.stringify(f)}` + sent)
        assert.notEqual(f.code, INTERNAL, `HERALD_ERR_INTERNAL (a bug): ${JSON.stringify(f)}` + sent + received)
      }
      for (const [id, n] of expected[ci]) {
        const got = answers(ci, id)
        // After a documented close the frames in flight are lost: at most one answer each, then.
        if (c.closed !== null) assert.ok(got <= n, `id ${JSON.stringify(id)} answered ${got} times for ${n} frames` + sent + received)
        else assert.equal(got, n, `id ${JSON.stringify(id)}: ${n} frame(s) sent, ${got} answer(s) carrying it` + sent + received)
      }
    }
  } finally {
    uncorkAll()
    await Promise.all(clients.map(async (c) => { await c.close() }))
  }
  let why: string | undefined
  const zero = await settled(async () => (why = await leftovers(app, PRESENCE_CHANNELS)) === undefined, 3000)
  assert.ok(zero, `the node did not return to zero after its clients left: ${why ?? ''}\nframes sent:\n  ` + log.join('\n  '))
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

/**
 * Seeded and bounded: the shrinking of a failure stops at the time limit, still reporting the failure found (a failing
 * run waits out its deadlines, so shrinking is slow). To explore: FUZZ_SEED=<n> another seed, FUZZ_RUNS=<k> k times
 * the runs, FUZZ_TIME_MS / FUZZ_FILE_MS more time (e.g. FUZZ_TIME_MS=60000 FUZZ_FILE_MS=600000 to shrink further).
 */
function params (seed: number, numRuns: number): fc.Parameters<[Scenario]> {
  return {
    seed: process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : seed,
    numRuns: Math.ceil(numRuns * Number(process.env.FUZZ_RUNS ?? 1)),
    includeErrorInReport: true,
    // A run takes milliseconds: one still going after 8 s hangs, and fails (the deadlines inside a run are 5 s).
    // Each property stops after its share of the file's time budget (what it ran counts, a failure found is reported).
    plugins: [fc.timeout(8000), fc.interruptAfterTimeLimit(timeLimit())]
  } as fc.Parameters<[Scenario]>
}

// ---------------------------------------------------------------- properties

// A few channels take most frames, so subscribes and unsubscribes of one channel race each other.
const HOT = ['room:a', 'a', 'tiny:z', 'full:m', 'live:x']

test('fuzz (seed 0x5ab5c1): subscribe and unsubscribe frames, racing on a few channels', async (t) => {
  const node = new Node(t)
  const hottest = fc.constantFrom('room:a', 'a')
  const clean = fc.oneof(
    fc.record({ type: fc.constant('subscribe'), channel: hottest, id: fc.string({ minLength: 1, maxLength: 4 }) }),
    fc.record({ type: fc.constant('subscribe'), channel: hottest, since: fc.record({ offset: fc.nat(3), epoch: fc.constant(LIVE_EPOCH as unknown) }) }),
    fc.record({ type: fc.constant('unsubscribe'), channel: hottest }, { requiredKeys: ['type', 'channel'] })
  )
  const payload = json(fc.oneof(
    { weight: 6, arbitrary: clean },
    { weight: 3, arbitrary: subscribeFrame(['room:a', 'a', 'full:m']) },
    { weight: 3, arbitrary: unsubscribeFrame(['room:a', 'a', 'full:m']) },
    { weight: 1, arbitrary: subscribeFrame(HOT) },
    { weight: 1, arbitrary: pingFrame }
  ))
  await fc.assert(fc.asyncProperty(scenario(payload, { maxClients: 3, paced: 1 }), async (sc) => { await run(node, sc) }), params(0x5ab5c1, 200))
})

test('fuzz (seed 0x9ab115): publish frames, with subscribers', async (t) => {
  const node = new Node(t)
  const payload = json(fc.oneof({ weight: 6, arbitrary: publishFrame(HOT.concat('quiet:q', 'drop:d', 'merge:m')) }, { weight: 2, arbitrary: subscribeFrame(HOT.concat('drop:d', 'merge:m')) }, { weight: 1, arbitrary: publishFrame() }))
  await fc.assert(fc.asyncProperty(scenario(payload), async (sc) => { await run(node, sc) }), params(0x9ab115, 150))
})

test('fuzz (seed 0x7e5e9c): ping, presence and refresh frames', async (t) => {
  const node = new Node(t)
  const payload = json(fc.oneof(
    { weight: 3, arbitrary: pingFrame },
    { weight: 4, arbitrary: presenceFrame },
    { weight: 3, arbitrary: refreshFrame },
    { weight: 3, arbitrary: subscribeFrame(PRESENCE_CHANNELS) }
  ))
  await fc.assert(fc.asyncProperty(scenario(payload, { maxClients: 3 }), async (sc) => { await run(node, sc) }), params(0x7e5e9c, 150))
})

test('fuzz (seed 0x0dd1ce): unknown types, non-object JSON, non-JSON text and binary frames', async (t) => {
  const node = new Node(t)
  const payload = fc.oneof(
    { weight: 3, arbitrary: json(unknownFrame) },
    { weight: 2, arbitrary: json(nonObjectJson) },
    { weight: 3, arbitrary: notJson.map((text): Payload => ({ kind: 'text', text })) },
    { weight: 1, arbitrary: fc.oneof(fc.uint8Array({ maxLength: 64 }), pingFrame.map((f) => new Uint8Array(Buffer.from(serialize(f, 'E'))))).map((bytes): Payload => ({ kind: 'binary', bytes })) },
    { weight: 1, arbitrary: json(pingFrame) }
  )
  await fc.assert(fc.asyncProperty(scenario(payload), async (sc) => { await run(node, sc) }), params(0x0dd1ce, 150))
})

test('fuzz (seed 0xa11f2a): every frame type mixed, over several connections', async (t) => {
  const node = new Node(t)
  const payload = fc.oneof(
    { weight: 3, arbitrary: json(subscribeFrame()) },
    { weight: 2, arbitrary: json(unsubscribeFrame()) },
    { weight: 3, arbitrary: json(publishFrame()) },
    { weight: 1, arbitrary: json(pingFrame) },
    { weight: 2, arbitrary: json(presenceFrame) },
    { weight: 1, arbitrary: json(refreshFrame) },
    { weight: 1, arbitrary: json(fc.oneof(unknownFrame, nonObjectJson)) },
    { weight: 1, arbitrary: notJson.map((text): Payload => ({ kind: 'text', text })) }
  )
  await fc.assert(fc.asyncProperty(scenario(payload, { maxClients: 3, maxSteps: 30 }), async (sc) => { await run(node, sc) }), params(0xa11f2a, 150))
})

// "1–128 characters": JSON Schema (the FrameId schema) counts code points, so an id of 100 emoji (200 UTF-16 units)
// is a valid id — a valid frame carrying it is acknowledged with it. A failing frame must be answered with it too.
test('fuzz (seed 0x1d5a57): ids of 1–128 characters outside the Basic Multilingual Plane are echoed', async (t) => {
  const node = new Node(t)
  const astralId = fc.tuple(fc.integer({ min: 65, max: 128 }), fc.constantFrom('😀', '𝔸', '🇫🇷'.slice(0, 2))).map(([n, c]) => c.repeat(n))
  const withId = (f: fc.Arbitrary<Obj>): fc.Arbitrary<Payload> => fc.tuple(f, astralId).map(([o, id]) => ({ kind: 'json', value: new Obj([...o.pairs.filter(([k]) => k !== 'id'), ['id', id]]) }))
  const payload = fc.oneof(withId(pingFrame), withId(subscribeFrame(HOT)), withId(publishFrame(HOT)), withId(presenceFrame), withId(refreshFrame), withId(unknownFrame))
  await fc.assert(fc.asyncProperty(scenario(payload, { maxClients: 1, maxSteps: 6 }), async (sc) => { await run(node, sc) }), params(0x1d5a57, 40))
})

// docs/protocol.md: over MAX_FRAME_BYTES a frame gets HERALD_ERR_FRAME_TOO_LARGE and the socket stays open; over four
// times that (at least 1 MiB) the socket is closed with 1009. Nesting past 64 levels is HERALD_ERR_BAD_FRAME. Such a
// frame is refused before it is read, so its error frame carries no id; the frames around it are answered as usual.
test('fuzz (seed 0xb16f2a): frames over the size limit or nested past the depth bound, next to ordinary ones', async (t) => {
  const node = new Node(t)
  const max = MAX_FRAME_BYTES
  const big = fc.tuple(fc.oneof(pingFrame, subscribeFrame(HOT), publishFrame(HOT)), goodId, fc.integer({ min: max + 1, max: 4 * max }), fc.boolean()).map(([f, id, size, idFirst]): Payload => {
    const pad: [string, unknown] = ['pad', 'p'.repeat(size)]
    const pairs = f.pairs.filter(([k]) => k !== 'id')
    return { kind: 'json', value: new Obj(idFirst ? [['id', id], ...pairs, pad] : [...pairs, pad, ['id', id]]) }
  })
  const deep = fc.tuple(fc.oneof(pingFrame, publishFrame(HOT)), goodId, fc.integer({ min: 64, max: 300 })).map(([f, id, depth]): Payload => {
    let v: unknown = 1
    for (let i = 0; i < depth; i++) v = [v]
    return { kind: 'json', value: new Obj([['id', id], ...f.pairs.filter(([k]) => k !== 'id' && k !== 'data'), ['data', v]]) }
  })
  const giant = fc.constant<Payload>({ kind: 'text', text: '{"type":"ping","id":"giant","pad":"' + 'g'.repeat(Math.max(4 * max, 1024 * 1024)) + '"}' })
  const payload = fc.oneof({ weight: 3, arbitrary: big }, { weight: 3, arbitrary: deep }, { weight: 1, arbitrary: giant }, { weight: 3, arbitrary: json(pingFrame) })
  await fc.assert(fc.asyncProperty(scenario(payload, { maxClients: 1, maxSteps: 5 }), async (sc) => { await run(node, sc) }), params(0xb16f2a, 20))
})

import { readFileSync } from 'node:fs'
import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { Value } from 'typebox/value'
import { parse as parseYaml } from 'yaml'
import { namespaceOf } from './protocol/channel.js'
import { ConfigError, Errors } from './errors.js'

/**
 * Per-namespace options. A channel's namespace is the part of its name before the first `:`
 * (`chat:lobby` → `chat`; a name without `:` is in the namespace `""`). Options come from the file named by
 * NAMESPACES_FILE (JSON or YAML, see docs/namespaces.md); anything not set there takes the defaults below.
 */
export const NamespaceOptionsSchema = Type.Object({
  historySize: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'Events kept per channel (default HISTORY_SIZE)' })),
  historyTtl: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 * 86400, description: 'Seconds an event stays in history (default HISTORY_TTL)' })),
  presence: Type.Boolean({ default: false, description: 'Track who is subscribed (presence frame and REST route)' }),
  joinLeave: Type.Boolean({ default: false, description: 'Send batched join/leave presence frames to subscribers (needs presence)' }),
  presenceCountsOnly: Type.Boolean({ default: false, description: 'Very large rooms: send only member/connection counts, never member lists' }),
  maxMembers: Type.Integer({ minimum: 0, default: 0, description: 'Most distinct members (subs) per channel, cluster-wide (needs presence; 0 = unlimited)' }),
  clientPublish: Type.Boolean({ default: true, description: 'Whether clients may publish over WebSocket (the token must allow it too)' }),
  delta: Type.Boolean({ default: false, description: 'Subscribers that ask for it (WebSocket `subscribe` `delta: true`, SSE `delta=<channel>`) get each live event after the first as a JSON Patch of the previous one\'s data; needs backpressure `disconnect`' }),
  latest: Type.Boolean({ default: false, description: 'Latest-value channel: a subscriber without a position first gets the channel\'s latest event (from history), then live ones' }),
  subscribeProxy: Type.Boolean({ default: false, description: 'Each subscription a client asks for is decided by the application\'s subscribe hook (PROXY_SUBSCRIBE_URL; docs/proxy.md) instead of the token\'s patterns' }),
  publishProxy: Type.Boolean({ default: false, description: 'Each client publish is decided (and may be rewritten) by the application\'s publish hook (PROXY_PUBLISH_URL) instead of the token\'s patterns' }),
  maxSubscribers: Type.Integer({ minimum: 0, default: 0, description: 'Most subscribers per channel on one node (0 = unlimited)' }),
  backpressure: Type.Union([Type.Literal('disconnect'), Type.Literal('drop-oldest'), Type.Literal('coalesce')], {
    default: 'disconnect', description: 'What to do with a subscriber that cannot keep up'
  }),
  coalesceKey: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'For `coalesce`: the field of `data` whose value identifies an event to keep only the newest of' }))
}, { additionalProperties: false })

export type NamespaceOptions = Static<typeof NamespaceOptionsSchema> & { historySize: number, historyTtl: number }

export const NamespacesFileSchema = Type.Object({
  defaults: Type.Optional(Type.Partial(NamespaceOptionsSchema, { additionalProperties: false })),
  namespaces: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.@-]{0,128}$' }), Type.Partial(NamespaceOptionsSchema, { additionalProperties: false }))),
  unknown: Type.Optional(Type.Union([Type.Literal('default'), Type.Literal('refuse')], { description: 'Channels of namespaces not listed: use the defaults, or refuse them' }))
}, { additionalProperties: false })

export type NamespacesFile = Static<typeof NamespacesFileSchema>

const checkFile = Compile(NamespacesFileSchema)

/** Resolves the options of a channel's namespace; `undefined` when unknown namespaces are refused. */
export class Namespaces {
  private readonly resolved = new Map<string, NamespaceOptions>()
  private readonly fallback: NamespaceOptions
  private readonly refuseUnknown: boolean

  constructor (file: NamespacesFile = {}, base: { historySize: number, historyTtl: number }) {
    const defaults = Value.Default(NamespaceOptionsSchema, { ...base, ...file.defaults }) as NamespaceOptions
    this.fallback = defaults
    this.refuseUnknown = file.unknown === 'refuse'
    for (const [name, options] of Object.entries(file.namespaces ?? {})) {
      this.resolved.set(name, { ...defaults, ...options } as NamespaceOptions)
    }
    for (const [name, options] of [['(defaults)', defaults] as const, ...this.resolved]) {
      if (options.delta && options.backpressure !== 'disconnect') throw new ConfigError([`namespace ${name}: delta needs backpressure "disconnect" (a dropped event would break the chain of patches)`])
    }
  }

  /** Options of the channel's namespace, or undefined when that namespace is not allowed. */
  of (channel: string): NamespaceOptions | undefined {
    const ns = namespaceOf(channel)
    const options = this.resolved.get(ns)
    if (options !== undefined) return options
    return this.refuseUnknown ? undefined : this.fallback
  }

  /** Options of the channel's namespace; throws HERALD_ERR_UNKNOWN_NAMESPACE when that namespace is refused. */
  require (channel: string): NamespaceOptions {
    const options = this.of(channel)
    if (options === undefined) throw new Errors.UNKNOWN_NAMESPACE(channel)
    return options
  }

  /** True when some namespace needs presence (so the presence store is worth starting). */
  get anyPresence (): boolean { return this.any('presence') }

  /** True when some namespace (or the defaults) turns that option on. */
  any (option: 'presence' | 'subscribeProxy' | 'publishProxy'): boolean {
    return this.fallback[option] || [...this.resolved.values()].some((o) => o[option])
  }
}

/** Reads and validates a namespaces file (JSON, or YAML when the name ends in .yaml/.yml). */
export function loadNamespacesFile (path: string): NamespacesFile {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError([`NAMESPACES_FILE=${JSON.stringify(path)}: cannot read it (${(err as Error).message})`])
  }
  let value: unknown
  try {
    value = /\.ya?ml$/i.test(path) ? parseYaml(text) : JSON.parse(text)
  } catch (err) {
    throw new ConfigError([`NAMESPACES_FILE=${JSON.stringify(path)}: not valid ${/\.ya?ml$/i.test(path) ? 'YAML' : 'JSON'} (${(err as Error).message})`])
  }
  if (!checkFile.Check(value)) {
    throw new ConfigError(checkFile.Errors(value).map((e) => `NAMESPACES_FILE ${e.instancePath || '/'}: ${e.message}`))
  }
  for (const [name, options] of Object.entries(value.namespaces ?? {})) {
    if (options.backpressure === 'coalesce' && options.coalesceKey === undefined && value.defaults?.coalesceKey === undefined) {
      throw new ConfigError([`NAMESPACES_FILE /namespaces/${name}: backpressure "coalesce" needs a coalesceKey`])
    }
    const backpressure = options.backpressure ?? value.defaults?.backpressure ?? 'disconnect'
    if ((options.delta ?? value.defaults?.delta) === true && backpressure !== 'disconnect') {
      throw new ConfigError([`NAMESPACES_FILE /namespaces/${name}: delta needs backpressure "disconnect" (a dropped event would break the chain of patches)`])
    }
  }
  return value
}

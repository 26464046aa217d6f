import type { Logger } from 'pino'
import { EMPTY_EPOCH, type Broker, type BrokerHandler, type BrokerOptions, type HistoryRequest, type HistoryResult, type Publication, type PublishRequest, type PublishResult } from './broker.js'
import { Errors } from '../errors.js'
import { busCall, closeClient, commandClient, type CommandClient, type RedisTarget } from '../redis/connection.js'
import { pubsubFor, type PubSub } from '../redis/pubsub.js'
import { contentHash, frameTail, newEpoch } from './publication.js'

/*
 * Keys of channel C, all in the hash slot of C (the `{C}` hash tag) so that Redis Cluster and sharded pub/sub
 * (SPUBLISH/SSUBSCRIBE) can come later without a redesign:
 *   P:{C}:m     hash  e = epoch, o = last offset           (expires HISTORY_META_TTL after the last publish)
 *   P:{C}:s     stream, entry id `<offset>-0`, fields t = publish ms, f = event frame (capped at HISTORY_SIZE)
 *   P:{C}:i:K   string `<offset> <epoch> <hash>` for idempotency key K (expires IDEMPOTENCY_TTL)
 *   P:{C}       pub/sub channel; message `<offset> <epoch> <frame>`
 */

/*
 * Publishing (one call) checks the idempotency key — honoured only within the channel's current epoch: a key
 * outliving a reset stream must not answer with an offset of the dead one — then creates the stream (and its
 * epoch) if the channel has none, assigns the offset, appends, publishes and records the key.
 * ARGV: tail, candidate epoch, history size, history ttl, meta ttl, idempotency ttl, pub/sub channel, channel JSON,
 * content hash ('' = no key), ts.
 */
const publishLua = (publish: 'PUBLISH' | 'SPUBLISH'): string => `
local idem = ARGV[9] ~= ''
local epoch = redis.call('HGET', KEYS[1], 'e')
if idem and epoch then
  local prev = redis.call('GET', KEYS[3])
  if prev and string.match(prev, '^%S+ (%S+) ') == epoch then return {'dup', prev} end
end
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local frame = '{"type":"event","channel":' .. ARGV[8] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[1]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 't', ARGV[10], 'f', frame)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
redis.call('${publish}', ARGV[7], offset .. ' ' .. epoch .. ' ' .. frame)
if idem then redis.call('SET', KEYS[3], offset .. ' ' .. epoch .. ' ' .. ARGV[9], 'EX', ARGV[6]) end
return {'ok', offset, epoch}
`

/*
 * Reading never creates anything: a channel without a stream answers with the empty position in EMPTY_EPOCH.
 * Events older than the age bound are trimmed first, at most TRIM_ROUNDS * 64 of them per call (the rest on the
 * next read), so no read blocks Redis for long. The page is cut at `limit` entries and at about `maxBytes` of
 * frames (always at least one entry).
 * ARGV: since, limit, meta ttl, min ts, max bytes, empty epoch.
 */
const HISTORY_LUA = `
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return {ARGV[6], 0, 1, {}} end
-- A channel being read (subscribed, resumed) is in use: it keeps its epoch as long as a published one would.
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local minTs = tonumber(ARGV[4])
for round = 1, 16 do
  local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 64)
  if #head == 0 then break end
  local keep = nil
  for _, e in ipairs(head) do
    if tonumber(e[2][2]) >= minTs then keep = e[1] break end
  end
  if keep then
    if keep ~= head[1][1] then redis.call('XTRIM', KEYS[2], 'MINID', keep) end
    break
  end
  local last = tonumber(string.match(head[#head][1], '^(%d+)'))
  redis.call('XTRIM', KEYS[2], 'MINID', (last + 1) .. '-0')
end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local earliest = top + 1
if #first > 0 then earliest = tonumber(string.match(first[1][1], '^(%d+)')) end
local entries = {}
local since = tonumber(ARGV[1])
if tonumber(ARGV[2]) > 0 and since < top then
  entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', ARGV[2])
  local budget = tonumber(ARGV[5])
  local bytes = 0
  for i, e in ipairs(entries) do
    bytes = bytes + #e[2][4]
    if bytes > budget and i > 1 then
      for j = #entries, i, -1 do entries[j] = nil end
      break
    end
  end
end
return {epoch, top, earliest, entries}
`

type WithScripts = CommandClient & {
  heraldPublish: (...args: Array<string | number>) => Promise<[string, number | string, string?]>
  heraldHistory: (...args: Array<string | number>) => Promise<[string, number, number, Array<[string, string[]]>]>
}

export interface RedisBrokerOptions extends BrokerOptions {
  /** One Redis (`{ url }`) or a Redis Cluster (`{ cluster: seeds }`); or `url` alone, as before. */
  target?: RedisTarget
  url?: string
  prefix: string
  log: Logger
  /** Milliseconds a command may take before it fails with HERALD_ERR_BUS_UNAVAILABLE. */
  commandTimeoutMs?: number
}

/**
 * The Redis bus, on one Redis or a Redis Cluster. One Lua call per publish assigns the offset, appends to a capped
 * stream and publishes (PUBLISH; SPUBLISH on a cluster: every key and the channel share the channel's slot), so
 * history and live delivery can never disagree. Commands go over a client without an offline queue (a publish
 * during an outage fails at once with 503 instead of waiting, and is never falsely acknowledged); live
 * publications come over pub/sub (redis/pubsub.ts), subscribed only for channels with local subscribers.
 */
export class RedisBroker implements Broker {
  readonly kind: string
  private handler: BrokerHandler = { onPublication: () => {}, onReconnect: () => {} }
  private readonly cmd: WithScripts
  private readonly pubsub: PubSub
  /** pub/sub channel name -> Herald channel */
  private readonly channels = new Map<string, string>()
  private closing = false

  constructor (private readonly options: RedisBrokerOptions) {
    const target = options.target ?? { url: options.url! }
    const timeout = options.commandTimeoutMs ?? 5000
    this.kind = 'url' in target ? 'redis' : 'redis-cluster'
    this.cmd = commandClient(target, 'herald-bus', options.log, () => this.closing, { commandTimeout: timeout }) as WithScripts
    this.pubsub = pubsubFor(target, this.cmd, 'herald-bus', options.log, timeout)
    this.cmd.defineCommand('heraldPublish', { numberOfKeys: 3, lua: publishLua(this.pubsub.publishCommand) })
    this.cmd.defineCommand('heraldHistory', { numberOfKeys: 2, lua: HISTORY_LUA })
    this.pubsub.setHandlers({
      message: (name, message) => this.onMessage(name, message),
      reconnect: (names) => this.handler.onReconnect(names?.map((n) => this.channels.get(n)).filter((c): c is string => c !== undefined))
    })
  }

  setHandler (handler: BrokerHandler): void { this.handler = handler }

  async connect (): Promise<void> { await Promise.all([this.cmd.connect(), this.pubsub.connect()]) }

  async publish (req: PublishRequest): Promise<PublishResult> {
    const ts = Date.now()
    const { history, idempotencyTtlSeconds } = this.options
    const hash = req.idempotencyKey === undefined ? '' : contentHash(req)
    const base = this.base(req.channel)
    const idemKey = req.idempotencyKey === undefined ? base + ':m' : base + ':i:' + req.idempotencyKey
    const reply = await busCall(() => this.cmd.heraldPublish(
      base + ':m', base + ':s', idemKey,
      frameTail(req, ts), newEpoch(), req.historySize ?? history.size, req.historyTtlSeconds ?? history.ttlSeconds, history.metaTtlSeconds,
      idempotencyTtlSeconds, base, JSON.stringify(req.channel), hash, ts))
    if (reply[0] === 'dup') {
      const [offset, epoch, prevHash] = String(reply[1]).split(' ')
      if (prevHash !== hash) throw new Errors.IDEMPOTENCY_CONFLICT(req.idempotencyKey, req.channel)
      return { channel: req.channel, offset: Number(offset), epoch, duplicate: true }
    }
    return { channel: req.channel, offset: Number(reply[1]), epoch: String(reply[2]), duplicate: false }
  }

  async history (channel: string, req: HistoryRequest): Promise<HistoryResult> {
    const base = this.base(channel)
    const minTs = Date.now() - (req.historyTtlSeconds ?? this.options.history.ttlSeconds) * 1000
    const [epoch, top, earliest, entries] = await busCall(() => this.cmd.heraldHistory(
      base + ':m', base + ':s', req.since, req.limit, this.options.history.metaTtlSeconds, minTs, req.maxBytes ?? Number.MAX_SAFE_INTEGER, EMPTY_EPOCH))
    const publications: Publication[] = entries.map(([id, fields]) => ({
      channel, offset: parseInt(id, 10), epoch, ts: Number(fields[1]), frame: fields[3]
    }))
    return { publications, top: { offset: Number(top), epoch }, earliest: Number(earliest) }
  }

  async subscribe (channel: string): Promise<void> {
    const name = this.base(channel)
    this.channels.set(name, channel)
    try {
      await this.pubsub.subscribe(name)
    } catch (err) {
      this.channels.delete(name)
      throw err
    }
  }

  async unsubscribe (channel: string): Promise<void> {
    const name = this.base(channel)
    this.channels.delete(name)
    await this.pubsub.unsubscribe(name)
  }

  ready (): boolean { return this.cmd.status === 'ready' && this.pubsub.ready() }

  async close (): Promise<void> {
    this.closing = true
    await Promise.all([closeClient(this.cmd), this.pubsub.close()])
  }

  private base (channel: string): string { return this.options.prefix + ':{' + channel + '}' }

  private onMessage (name: string, message: string): void {
    const channel = this.channels.get(name)
    if (channel === undefined) return
    const a = message.indexOf(' ')
    const b = message.indexOf(' ', a + 1)
    const frame = message.slice(b + 1)
    // ts sits right after the epoch in the frame head; history readers have it as a field instead.
    const tsAt = frame.indexOf('"ts":') + 5
    const ts = parseInt(frame.slice(tsAt, frame.indexOf(',', tsAt)), 10)
    this.handler.onPublication({ channel, offset: parseInt(message.slice(0, a), 10), epoch: message.slice(a + 1, b), ts, frame })
  }
}

import type { ChainableCommander } from 'ioredis'
import type { Logger } from 'pino'
import type { StreamPosition } from '../protocol/cursor.js'
import { EMPTY_EPOCH, type Broker, type BrokerHandler, type BrokerOptions, type ControlHandler, type HistoryRequest, type HistoryResult, type Publication, type PublishRequest, type PublishResult } from './broker.js'
import { Errors } from '../errors.js'
import { busCall, closeClient, commandClient, type CommandClient, type RedisTarget } from '../redis/connection.js'
import { pubsubFor, type PubSub } from '../redis/pubsub.js'
import { contentHash, frameTail, newEpoch } from './publication.js'

/*
 * Keys of channel C, all in the hash slot of C (the `{C}` hash tag) so that Redis Cluster and sharded pub/sub
 * (SPUBLISH/SSUBSCRIBE) can come later without a redesign:
 *   P:{C}:m     hash  e = epoch, o = last offset, r = the Redis's replication id when the epoch began,
 *                      pe, po = the epoch before and where it ended, pl = the ones before that (below)
 *                                                         (expires HISTORY_META_TTL after the last publish)
 *   P:{C}:s     stream, entry id `<offset>-0`, fields t = publish ms, f = event frame (capped at HISTORY_SIZE)
 *   P:{C}:i:K   string `<offset> <epoch> <hash>` for idempotency key K (expires IDEMPOTENCY_TTL)
 *   P:{C}       pub/sub channel; message `<offset> <epoch> <frame>`
 * and one more pub/sub channel, P:!control, for node-to-node control messages (no channel name holds a `!`).
 */

/*
 * The epoch is tied to the Redis that holds it. Replication is asynchronous: a replica promoted after its primary
 * died, or a Redis restarted from its last snapshot, may lack the newest acknowledged (and already delivered)
 * events of a channel, and would hand their offsets out again, to other events. Both give the Redis a new
 * replication id (INFO replication: master_replid), so the channel's meta records the id its epoch runs under, and
 * a publish that finds another one starts a new epoch *in line with* the old: offsets go on from the last one this
 * Redis holds, and the meta keeps where the previous epoch ended here (pe, po). A reader at or before that point
 * saw nothing that was lost and resumes straight on into the new epoch; a reader past it saw lost events and is
 * told its place is gone (recovered: false). No two events ever share an (epoch, offset).
 */
const REPLID_LUA = `local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')`

/*
 * An epoch can go on from one that went on from another: a slot moved away and back (each move puts the keys on
 * another Redis), a failover after a move. `pl` keeps the epochs before `pe`, oldest first, as "epoch offset …"
 * (at most LINEAGE_MAX pairs). Each ended where the next one took over, and those ends never decrease (an epoch is
 * created on top of what it goes on from, in one script), so a position (E, x) with x at or before the end of E is
 * in line with the current epoch, however many epochs ago E was. Past the bound the oldest are forgotten: their
 * readers are told recovered: false, and history names their events by the oldest epoch kept.
 */
const LINEAGE_MAX = 15
const LINEAGE_LUA = `
local function lineageAppend (pl, e, o)
  local items = {}
  for x in string.gmatch(pl or '', '%S+') do items[#items + 1] = x end
  items[#items + 1] = e
  items[#items + 1] = tostring(o)
  while #items > ${2 * LINEAGE_MAX} do table.remove(items, 1) table.remove(items, 1) end
  return table.concat(items, ' ')
end
local function inLineage (e, o, pe, po, pl)
  if pe and e == pe and o <= tonumber(po) then return true end
  for le, lo in string.gmatch(pl or '', '(%S+) (%S+)') do
    if e == le and o <= tonumber(lo) then return true end
  end
  return false
end`

/*
 * Publishing (one call) moves the channel into a new epoch if its epoch runs under another Redis (above), checks
 * the idempotency key — honoured for events of the current epoch and of the earlier ones in its line up to where
 * each ended here: a key outliving a reset stream must not answer with an offset of the dead one — then creates the stream
 * (and its epoch) if the channel has none, assigns the offset, appends, publishes and records the key.
 * ARGV: tail, candidate epoch, history size, history ttl, meta ttl, idempotency ttl, pub/sub channel, channel JSON,
 * content hash ('' = no key), ts.
 */
const publishLua = (publish: 'PUBLISH' | 'SPUBLISH'): string => `
${REPLID_LUA}
${LINEAGE_LUA}
local idem = ARGV[9] ~= ''
local meta = redis.call('HMGET', KEYS[1], 'e', 'r', 'pe', 'po', 'pl')
local epoch = meta[1]
local pe, po, pl = meta[3], tonumber(meta[4]), meta[5]
if epoch and meta[2] ~= replid then
  if pe then pl = lineageAppend(pl, pe, po) end
  pe, po = epoch, tonumber(redis.call('HGET', KEYS[1], 'o'))
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', epoch, 'r', replid, 'pe', pe, 'po', po, 'pl', pl or '')
end
if idem and epoch then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    local prevOffset, prevEpoch = string.match(prev, '^(%S+) (%S+) ')
    if prevEpoch == epoch or inLineage(prevEpoch, tonumber(prevOffset), pe, po, pl) then return {'dup', prev} end
  end
end
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0, 'r', replid)
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
 * Events up to `po` belong to the previous epoch `pe` (if any) or the ones before it (`pl`), those after it to the
 * current one.
 * Events older than the age bound are trimmed first, at most TRIM_ROUNDS * 64 of them per call (the rest on the
 * next read), so no read blocks Redis for long. The page is cut at `limit` entries and at about `maxBytes` of
 * frames (always at least one entry).
 * ARGV: since, limit, meta ttl, min ts, max bytes, empty epoch.
 */
const HISTORY_LUA = `
local meta = redis.call('HMGET', KEYS[1], 'e', 'pe', 'po', 'pl')
local epoch = meta[1]
if not epoch then return {ARGV[6], 0, 1, {}, '', 0, ''} end
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
return {epoch, top, earliest, entries, meta[2] or '', tonumber(meta[3] or 0), meta[4] or ''}
`

/*
 * A node found the bus behind a position it has delivered (the stream's head is below an offset of the same epoch
 * it saw): the epoch cannot go on, or its next offsets would name other events. Starts a new one in line with it,
 * as a publish after a failover does — only if the channel is still in that epoch and still behind, so several
 * nodes finding it at once restart it once.
 * ARGV: the epoch seen, the offset seen, the new epoch.
 */
const RESTART_EPOCH_LUA = `
${REPLID_LUA}
${LINEAGE_LUA}
local meta = redis.call('HMGET', KEYS[1], 'e', 'o', 'pe', 'po', 'pl')
if meta[1] ~= ARGV[1] or tonumber(meta[2]) >= tonumber(ARGV[2]) then return 0 end
local pl = meta[5]
if meta[3] then pl = lineageAppend(pl, meta[3], meta[4]) end
redis.call('HSET', KEYS[1], 'e', ARGV[3], 'r', replid, 'pe', meta[1], 'po', meta[2], 'pl', pl or '')
return 1
`

type WithScripts = CommandClient & {
  heraldPublish: (...args: Array<string | number>) => Promise<[string, number | string, string?]>
  heraldHistory: (...args: Array<string | number>) => Promise<[string, number, number, Array<[string, string[]]>, string, number, string]>
  heraldRestartEpoch: (...args: Array<string | number>) => Promise<number>
}

export interface RedisBrokerOptions extends BrokerOptions {
  /** One Redis (`{ url }`) or a Redis Cluster (`{ cluster: seeds }`); or `url` alone, as before. */
  target?: RedisTarget
  url?: string
  prefix: string
  log: Logger
  /** Milliseconds a command may take before it fails with HERALD_ERR_BUS_UNAVAILABLE. */
  commandTimeoutMs?: number
  /** Acknowledge a publish only once this many replicas hold it (WAIT), waiting at most timeoutMs. */
  wait?: { replicas: number, timeoutMs: number }
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
  private control?: ControlHandler
  private readonly controlName: string

  constructor (private readonly options: RedisBrokerOptions) {
    this.controlName = options.prefix + ':!control'
    const target = options.target ?? { url: options.url! }
    const timeout = options.commandTimeoutMs ?? 5000
    this.kind = 'url' in target ? 'redis' : 'redis-cluster'
    this.cmd = commandClient(target, 'herald-bus', options.log, () => this.closing, { commandTimeout: timeout }) as WithScripts
    this.pubsub = pubsubFor(target, this.cmd, 'herald-bus', options.log, timeout)
    this.cmd.defineCommand('heraldPublish', { numberOfKeys: 3, lua: publishLua(this.pubsub.publishCommand) })
    this.cmd.defineCommand('heraldHistory', { numberOfKeys: 2, lua: HISTORY_LUA })
    this.cmd.defineCommand('heraldRestartEpoch', { numberOfKeys: 2, lua: RESTART_EPOCH_LUA })
    this.pubsub.setHandlers({
      message: (name, message) => this.onMessage(name, message),
      reconnect: (names) => {
        if (names === undefined || names.includes(this.controlName)) this.control?.missed()
        this.handler.onReconnect(names?.map((n) => this.channels.get(n)).filter((c): c is string => c !== undefined))
      }
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
    const args = [
      base + ':m', base + ':s', idemKey,
      frameTail(req, ts), newEpoch(), req.historySize ?? history.size, req.historyTtlSeconds ?? history.ttlSeconds, history.metaTtlSeconds,
      idempotencyTtlSeconds, base, JSON.stringify(req.channel), hash, ts]
    const replicas = this.options.wait?.replicas ?? 0
    const reply = replicas === 0
      ? await busCall(() => this.cmd.heraldPublish(...args))
      : await this.publishReplicated(args, replicas, this.options.wait!.timeoutMs)
    if (reply[0] === 'dup') {
      const [offset, epoch, prevHash] = String(reply[1]).split(' ')
      if (prevHash !== hash) throw new Errors.IDEMPOTENCY_CONFLICT(req.idempotencyKey, req.channel)
      return { channel: req.channel, offset: Number(offset), epoch, duplicate: true }
    }
    return { channel: req.channel, offset: Number(reply[1]), epoch: String(reply[2]), duplicate: false }
  }

  /**
   * The publish script and WAIT in one pipeline: on a cluster the pipeline goes whole to the node of the script's
   * keys, so WAIT counts the replicas of the primary that took the publish. A retry of a duplicate waits too (its
   * first attempt may have been acknowledged by the primary alone).
   */
  private async publishReplicated (args: Array<string | number>, replicas: number, timeoutMs: number): Promise<[string, number | string, string?]> {
    const pipeline = this.cmd.pipeline() as ChainableCommander & { heraldPublish: (...a: Array<string | number>) => ChainableCommander }
    const results = await busCall(async () => await pipeline.heraldPublish(...args).wait(replicas, timeoutMs).exec())
    if (results === null) throw new Errors.BUS_UNAVAILABLE('pipeline aborted')
    const [[publishErr, reply], [waitErr, acked]] = results
    if (publishErr !== null) throw new Errors.BUS_UNAVAILABLE(publishErr.message)
    if (waitErr !== null || Number(acked) < replicas) {
      throw new Errors.BUS_UNAVAILABLE(`published but held by ${waitErr === null ? Number(acked) : 0} of ${replicas} replicas after ${timeoutMs} ms; retry with the same id`)
    }
    return reply as [string, number | string, string?]
  }

  async history (channel: string, req: HistoryRequest): Promise<HistoryResult> {
    const base = this.base(channel)
    const minTs = Date.now() - (req.historyTtlSeconds ?? this.options.history.ttlSeconds) * 1000
    const [epoch, top, earliest, entries, previousEpoch, previousOffset, lineage] = await busCall(() => this.cmd.heraldHistory(
      base + ':m', base + ':s', req.since, req.limit, this.options.history.metaTtlSeconds, minTs, req.maxBytes ?? Number.MAX_SAFE_INTEGER, EMPTY_EPOCH))
    const previous = previousEpoch === '' ? undefined : { offset: Number(previousOffset), epoch: previousEpoch }
    // Every epoch this one went on from, oldest first: an event belongs to the first one that it is not past the end of.
    const ends: StreamPosition[] = []
    const words = lineage.split(' ').filter(Boolean)
    for (let i = 0; i + 1 < words.length; i += 2) ends.push({ epoch: words[i], offset: Number(words[i + 1]) })
    if (previous !== undefined) ends.push(previous)
    const publications: Publication[] = entries.map(([id, fields]) => {
      const offset = parseInt(id, 10)
      return { channel, offset, epoch: ends.find((e) => offset <= e.offset)?.epoch ?? epoch, ts: Number(fields[1]), frame: fields[3] }
    })
    const result: HistoryResult = { publications, top: { offset: Number(top), epoch }, earliest: Number(earliest) }
    if (previous !== undefined) result.previous = previous
    if (ends.length > 1) result.earlier = ends.slice(0, -1).reverse()
    return result
  }

  async restartEpoch (channel: string, seen: { offset: number, epoch: string }): Promise<boolean> {
    const base = this.base(channel)
    return await busCall(() => this.cmd.heraldRestartEpoch(base + ':m', base + ':s', seen.epoch, seen.offset, newEpoch())) === 1
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

  /** On a cluster the control channel lives in the slot of its name: one shard carries every node's control messages. */
  async publishControl (message: string): Promise<number> {
    const name = this.controlName
    return Number(await busCall(async () => this.pubsub.publishCommand === 'SPUBLISH' ? await this.cmd.spublish(name, message) : await this.cmd.publish(name, message)))
  }

  async subscribeControl (handler: ControlHandler): Promise<void> {
    this.control = handler
    await this.pubsub.subscribe(this.controlName)
  }

  async removeHistory (channel: string): Promise<StreamPosition> {
    await busCall(async () => await this.cmd.del(this.base(channel) + ':s'))
    return (await this.history(channel, { since: 0, limit: 0 })).top
  }

  ready (): boolean { return this.cmd.status === 'ready' && this.pubsub.ready() }

  async close (): Promise<void> {
    this.closing = true
    await Promise.all([closeClient(this.cmd), this.pubsub.close()])
  }

  private base (channel: string): string { return this.options.prefix + ':{' + channel + '}' }

  private onMessage (name: string, message: string): void {
    if (name === this.controlName) { this.control?.message(message); return }
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

import type { Logger } from 'pino'
import type { PresenceChange, PresenceCount, PresenceMember, PresenceStore } from './presence.js'
import { busCall, closeClient, commandClient, type CommandClient, type RedisTarget } from '../redis/connection.js'
import { pubsubFor, type PubSub } from '../redis/pubsub.js'

/*
 * Keys of channel C (same `{C}` hash slot as its stream):
 *   P:{C}:pm  hash  client -> member JSON
 *   P:{C}:pz  zset  client -> expiry (ms); refreshed by the client's node
 *   P:{C}:pu  hash  sub -> number of connections
 *   P:{C}:pe  pub/sub channel of member-level changes: {"t":"join","m":<member>} / {"t":"leave","sub":…}
 * Every script first removes expired entries (a dead node's), announcing the leaves they cause.
 */
const CLEANUP = `
local function cleanup(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, c in ipairs(expired) do
    local json = redis.call('HGET', KEYS[1], c)
    redis.call('HDEL', KEYS[1], c)
    redis.call('ZREM', KEYS[2], c)
    if json then
      local sub = cjson.decode(json).sub
      if redis.call('HINCRBY', KEYS[3], sub, -1) <= 0 then
        redis.call('HDEL', KEYS[3], sub)
        redis.call(PUB, KEYS[4], cjson.encode({t = 'leave', sub = sub}))
      else
        redis.call(PUB, KEYS[4], cjson.encode({t = 'conn', sub = sub}))
      end
    end
  end
end
local function touch(ttl)
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
`

// ARGV: now, client, sub, member JSON, expiry, maxMembers, key ttl ms
const JOIN = CLEANUP + `
cleanup(ARGV[1])
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
  return 0
end
local n = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
if n == 0 and tonumber(ARGV[6]) > 0 and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[6]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
n = redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
touch(ARGV[7])
if n == 1 then
  redis.call(PUB, KEYS[4], '{"t":"join","m":' .. ARGV[4] .. '}')
  return 1
end
redis.call(PUB, KEYS[4], cjson.encode({t = 'conn', sub = ARGV[3]}))
return 0
`

// ARGV: now, client, sub
const LEAVE = CLEANUP + `
cleanup(ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[3])
  redis.call(PUB, KEYS[4], cjson.encode({t = 'leave', sub = ARGV[3]}))
else
  redis.call(PUB, KEYS[4], cjson.encode({t = 'conn', sub = ARGV[3]}))
end
return 1
`

// ARGV: now, expiry, key ttl ms, clients... Returns the clients that were missing (lost in an outage).
const REFRESH = CLEANUP + `
cleanup(ARGV[1])
local missing = {}
for i = 4, #ARGV do
  if redis.call('ZADD', KEYS[2], 'XX', 'CH', ARGV[2], ARGV[i]) == 0 and redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    missing[#missing + 1] = ARGV[i]
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then touch(ARGV[3]) end
return missing
`

// ARGV: now
const LIST = CLEANUP + `
cleanup(ARGV[1])
return redis.call('HVALS', KEYS[1])
`

const COUNT = CLEANUP + `
cleanup(ARGV[1])
return {redis.call('HLEN', KEYS[3]), redis.call('HLEN', KEYS[1])}
`

type Script = (...args: Array<string | number>) => Promise<unknown>
type WithPresence = CommandClient & { presenceJoin: Script, presenceLeave: Script, presenceRefresh: Script, presenceList: Script, presenceCount: Script }

export interface RedisPresenceOptions {
  /** One Redis (`{ url }`) or a Redis Cluster (`{ cluster: seeds }`); or `url` alone. */
  target?: RedisTarget
  url?: string
  prefix: string
  ttlSeconds: number
  log: Logger
}

export class RedisPresence implements PresenceStore {
  readonly kind: string
  private readonly cmd: WithPresence
  private readonly pubsub: PubSub
  private readonly watched = new Map<string, string>()
  private handler: (change: PresenceChange) => void = () => {}
  private closing = false

  constructor (private readonly options: RedisPresenceOptions) {
    const target = options.target ?? { url: options.url! }
    this.kind = 'url' in target ? 'redis' : 'redis-cluster'
    this.cmd = commandClient(target, 'herald-presence', options.log, () => this.closing) as WithPresence
    this.pubsub = pubsubFor(target, this.cmd, 'herald-presence', options.log)
    // Changes are announced with PUBLISH, or SPUBLISH on a cluster (the channel shares the keys' slot).
    const pub = `'${this.pubsub.publishCommand}'`
    for (const [name, lua] of [['presenceJoin', JOIN], ['presenceLeave', LEAVE], ['presenceRefresh', REFRESH], ['presenceList', LIST], ['presenceCount', COUNT]]) {
      this.cmd.defineCommand(name, { numberOfKeys: 4, lua: lua.replaceAll('redis.call(PUB,', `redis.call(${pub},`) })
    }
    // A missed change only delays the batched frames: presence itself lives in the store, not in the messages.
    this.pubsub.setHandlers({ message: (name, message) => this.onMessage(name, message), reconnect: () => {} })
  }

  setHandler (handler: (change: PresenceChange) => void): void { this.handler = handler }

  async connect (): Promise<void> { await Promise.all([this.cmd.connect(), this.pubsub.connect()]) }

  async join (channel: string, member: PresenceMember, maxMembers: number): Promise<{ joined: boolean, full: boolean }> {
    const now = Date.now()
    const ttl = this.options.ttlSeconds * 1000
    const result = Number(await busCall(() => this.cmd.presenceJoin(...this.keys(channel), now, member.client, member.sub,
      JSON.stringify(member), now + ttl, maxMembers, ttl * 2)))
    return { joined: result === 1, full: result === -1 }
  }

  async leave (channel: string, member: PresenceMember): Promise<void> {
    await busCall(() => this.cmd.presenceLeave(...this.keys(channel), Date.now(), member.client, member.sub))
  }

  async list (channel: string): Promise<PresenceMember[]> {
    const values = await busCall(() => this.cmd.presenceList(...this.keys(channel), Date.now())) as string[]
    return values.map((v) => JSON.parse(v) as PresenceMember)
  }

  async count (channel: string): Promise<PresenceCount> {
    const [members, connections] = await busCall(() => this.cmd.presenceCount(...this.keys(channel), Date.now())) as [number, number]
    return { members: Number(members), connections: Number(connections) }
  }

  async refresh (channel: string, members: PresenceMember[]): Promise<void> {
    const now = Date.now()
    const ttl = this.options.ttlSeconds * 1000
    const missing = await busCall(() => this.cmd.presenceRefresh(...this.keys(channel), now, now + ttl, ttl * 2, ...members.map((m) => m.client))) as string[]
    // Entries lost while Redis was away (an outage past the TTL, a restart without persistence) come back as joins.
    for (const client of missing) {
      const member = members.find((m) => m.client === client)
      if (member !== undefined) await this.join(channel, member, 0)
    }
  }

  async watch (channel: string): Promise<void> {
    const name = this.keys(channel)[3]
    this.watched.set(name, channel)
    await this.pubsub.subscribe(name)
  }

  async unwatch (channel: string): Promise<void> {
    const name = this.keys(channel)[3]
    this.watched.delete(name)
    await this.pubsub.unsubscribe(name)
  }

  async close (): Promise<void> {
    this.closing = true
    await Promise.all([closeClient(this.cmd), this.pubsub.close()])
  }

  private keys (channel: string): [string, string, string, string] {
    const base = this.options.prefix + ':{' + channel + '}:p'
    return [base + 'm', base + 'z', base + 'u', base + 'e']
  }

  private onMessage (name: string, message: string): void {
    const channel = this.watched.get(name)
    if (channel === undefined) return
    try {
      const msg = JSON.parse(message) as { t: string, m?: PresenceMember, sub?: string }
      if (msg.t === 'join' && msg.m !== undefined) this.handler({ channel, type: 'join', sub: msg.m.sub, info: msg.m.info })
      else if (msg.t === 'leave' && msg.sub !== undefined) this.handler({ channel, type: 'leave', sub: msg.sub })
      else if (msg.t === 'conn' && msg.sub !== undefined) this.handler({ channel, type: 'connections', sub: msg.sub })
    } catch (err) {
      this.options.log.warn({ err, channel }, 'bad presence message')
    }
  }
}

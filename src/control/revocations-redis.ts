import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { Errors } from '../errors.js'
import { busCall, closeClient, commandClient, type CommandClient, type RedisTarget } from '../redis/connection.js'
import { revocationKey, type Revocation, type RevocationStore } from './revocations.js'

/*
 * Keys, all in one hash slot (`{!revocations}`: no channel name holds a `!`, so no channel's keys can be these):
 *   P:{!revocations}:z   sorted set  member `s:<sub>` or `j:<jti>`, score = until (seconds)
 *   P:{!revocations}:h   hash        the same members -> `before` (the iat cutoff; 0 for a token id)
 *   P:{!revocations}:v   string      a random version, set anew by every add
 * All three expire a minute after the last revocation ends, so nothing is left once none is in force.
 */

/*
 * Adding (one call): drop what has expired (at most 2,048 per call, the rest on later calls), merge with the same
 * member's revocation (the later cutoff and end win), refuse a new member past the bound, store, bump the version.
 * ARGV: member, before, until, now, max, version. Returns {'ok', before, until} or {'full'}.
 */
const ADD_LUA = `
local now = tonumber(ARGV[4])
for round = 1, 8 do
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 256)
  if #gone == 0 then break end
  redis.call('HDEL', KEYS[2], unpack(gone))
  redis.call('ZREM', KEYS[1], unpack(gone))
end
local before = tonumber(ARGV[2])
local untilAt = tonumber(ARGV[3])
local had = redis.call('ZSCORE', KEYS[1], ARGV[1])
if had then
  untilAt = math.max(untilAt, tonumber(had))
  before = math.max(before, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or 0))
elseif redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then
  return {'full'}
end
redis.call('ZADD', KEYS[1], untilAt, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], before)
redis.call('SET', KEYS[3], ARGV[6])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local expireAt = math.ceil(tonumber(last[2])) + 60
for i = 1, 3 do redis.call('EXPIREAT', KEYS[i], expireAt) end
return {'ok', tostring(before), tostring(untilAt)}
`

type WithScripts = CommandClient & { heraldRevoke: (...args: Array<string | number>) => Promise<string[]> }

/** Revocations in Redis (one instance or a cluster), beside the bus: every node reads the same set. */
export class RedisRevocations implements RevocationStore {
  private readonly cmd: WithScripts
  private readonly base: string
  private closing = false

  constructor (private readonly options: { target: RedisTarget, prefix: string, max: number, log: Logger }) {
    this.cmd = commandClient(options.target, 'herald-revocations', options.log, () => this.closing, { commandTimeout: 2000 }) as WithScripts
    this.cmd.defineCommand('heraldRevoke', { numberOfKeys: 3, lua: ADD_LUA })
    this.base = options.prefix + ':{!revocations}'
  }

  async connect (): Promise<void> { await this.cmd.connect() }

  async add (r: Revocation, now: number): Promise<Revocation> {
    const before = r.kind === 'sub' ? r.before : 0
    const reply = await busCall(async () => await this.cmd.heraldRevoke(this.base + ':z', this.base + ':h', this.base + ':v',
      revocationKey(r), before, r.until, now, this.options.max, randomBytes(9).toString('base64url')))
    if (reply[0] === 'full') throw new Errors.TOO_MANY_REVOCATIONS(this.options.max)
    const until = Number(reply[2])
    return r.kind === 'sub' ? { kind: 'sub', sub: r.sub, before: Number(reply[1]), until } : { kind: 'jti', jti: r.jti, until }
  }

  async all (now: number): Promise<Revocation[]> {
    const scored = await busCall(async () => await this.cmd.zrangebyscore(this.base + ':z', '(' + String(now), '+inf', 'WITHSCORES'))
    const out: Revocation[] = []
    for (let i = 0; i < scored.length; i += 2000) {
      const members: string[] = []
      const untils: number[] = []
      for (let j = i; j < Math.min(i + 2000, scored.length); j += 2) { members.push(scored[j]); untils.push(Number(scored[j + 1])) }
      const befores = await busCall(async () => await this.cmd.hmget(this.base + ':h', ...members))
      members.forEach((member, k) => {
        const until = untils[k]
        const id = member.slice(2)
        if (member.startsWith('s:')) out.push({ kind: 'sub', sub: id, before: Number(befores[k] ?? 0), until })
        else if (member.startsWith('j:')) out.push({ kind: 'jti', jti: id, until })
      })
    }
    return out
  }

  async version (): Promise<string> {
    return await busCall(async () => await this.cmd.get(this.base + ':v')) ?? ''
  }

  async close (): Promise<void> {
    this.closing = true
    await closeClient(this.cmd)
  }
}

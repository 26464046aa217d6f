/*
 * Lua of the Redis webhook store. Every key is under one hash tag, `{<prefix>:wh}`, so each script stays in one
 * slot on a Redis Cluster; KEYS[1] is the members' zset (it routes the call), the others are built from P (ARGV[1],
 * the tag-carrying key prefix). Keys, after P:
 *   nodes         zset  member -> liveness deadline (ms)
 *   w             hash  member -> token of its last report (a failover that lost it is noticed by its next report)
 *   reap          set   members past their deadline whose keys are being released
 *   m:<member>    set   keys the member holds
 *   k:<key>       set   members holding the key (`c:<channel>` or `u:<sub>`)
 *   on            set   keys last announced up (occupied / online)
 *   due           zset  key -> when to check whether it is still empty (the debounce)
 *   seq           counter of queued jobs (their age order, and the tail of their ids)
 *   q             zset  job id -> seq: every queued job, oldest first (the bound drops from the front)
 *   ready         zset  job id -> ms when it may be claimed (a claimed one: when its visibility timeout ends)
 *   jobs          hash  job id -> JSON {id, type, ts, channel | sub, a (attempts)}
 */

const COMMON = `
local P = ARGV[1]
local enqueued, dropped = 0, {}
local function enqueue(key, up, now, max, idBase)
  local kind, name = string.sub(key, 1, 1), string.sub(key, 3)
  local job = {ts = tonumber(now), a = 0}
  if kind == 'c' then
    job.type = up and 'channel.occupied' or 'channel.vacated'
    job.channel = name
  else
    job.type = up and 'user.online' or 'user.offline'
    job.sub = name
  end
  local seq = redis.call('INCR', P .. 'seq')
  job.id = idBase .. '-' .. seq
  redis.call('HSET', P .. 'jobs', job.id, cjson.encode(job))
  redis.call('ZADD', P .. 'q', seq, job.id)
  redis.call('ZADD', P .. 'ready', now, job.id)
  enqueued = enqueued + 1
  while redis.call('ZCARD', P .. 'q') > max do
    local old = redis.call('ZPOPMIN', P .. 'q')[1]
    local json = redis.call('HGET', P .. 'jobs', old)
    redis.call('HDEL', P .. 'jobs', old)
    redis.call('ZREM', P .. 'ready', old)
    if json then dropped[#dropped + 1] = cjson.decode(json).type end
  end
end
-- A member no longer holds key: if none does and it was announced up, check again after the debounce.
local function release(key, member, now, debounce)
  redis.call('SREM', P .. 'm:' .. member, key)
  if redis.call('SREM', P .. 'k:' .. key, member) == 1 and redis.call('SCARD', P .. 'k:' .. key) == 0
      and redis.call('SISMEMBER', P .. 'on', key) == 1 then
    local at = tonumber(now) + tonumber(debounce)
    redis.call('ZADD', P .. 'due', at, key)
    return at
  end
  return nil
end
`

/**
 * ARGV: P, now, member, deadline, known (1/0), debounce ms, queueMax, id base (also this report's token), the
 * tokens the member's last report may have (comma-separated), then key, up (1/0) pairs.
 * Returns {forgotten (1/0), enqueued, queue length, earliest due or -1, dropped types...}.
 *
 * A known member is forgotten when it is gone (reaped, or Redis lost its data), and also when its last report is
 * gone: the store holds another token than any the node may have written last. Replication is asynchronous and
 * in order, so a failover to a replica that missed that report may have lost any of the member's reports since
 * the replica's last one, and which is not known: the member is retired (the next sweep releases whatever the
 * store still has of it) and the node rejoins with everything it holds.
 */
export const UPDATE = COMMON + `
local now, member = ARGV[2], ARGV[3]
if ARGV[5] == '1' then
  if not redis.call('ZSCORE', KEYS[1], member) then return {1, 0, 0, -1} end
  local last = redis.call('HGET', P .. 'w', member)
  if not last or not string.find(',' .. ARGV[9] .. ',', ',' .. last .. ',', 1, true) then
    redis.call('ZADD', KEYS[1], 0, member)
    return {1, 0, 0, -1}
  end
end
redis.call('ZADD', KEYS[1], ARGV[4], member)
redis.call('HSET', P .. 'w', member, ARGV[8])
local dueAt = -1
for i = 10, #ARGV, 2 do
  local key = ARGV[i]
  if ARGV[i + 1] == '1' then
    redis.call('SADD', P .. 'k:' .. key, member)
    redis.call('SADD', P .. 'm:' .. member, key)
    redis.call('ZREM', P .. 'due', key)
    if redis.call('SADD', P .. 'on', key) == 1 then enqueue(key, true, now, tonumber(ARGV[7]), ARGV[8]) end
  else
    local at = release(key, member, now, ARGV[6])
    if at and (dueAt == -1 or at < dueAt) then dueAt = at end
  end
end
local out = {0, enqueued, redis.call('ZCARD', P .. 'q'), dueAt}
for _, t in ipairs(dropped) do out[#out + 1] = t end
return out
`

/**
 * Reaps members past their deadline (up to a budget of keys per call), then announces the keys whose debounce
 * check is due and that are still empty. ARGV: P, now, debounce ms, queueMax, id base, budget.
 * Returns {enqueued, queue length, next due or -1, more (1/0), dropped types...}.
 */
export const SWEEP = COMMON + `
local now, budget = ARGV[2], tonumber(ARGV[6])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', P .. 'w', m)
  redis.call('SADD', P .. 'reap', m)
end
local more = 0
for _, m in ipairs(redis.call('SRANDMEMBER', P .. 'reap', 16)) do
  if budget <= 0 then more = 1 break end
  local keys = redis.call('SPOP', P .. 'm:' .. m, budget)
  for _, key in ipairs(keys) do release(key, m, now, ARGV[3]) end
  budget = budget - #keys
  if redis.call('SCARD', P .. 'm:' .. m) == 0 then redis.call('SREM', P .. 'reap', m) else more = 1 end
end
local due = redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', now, 'LIMIT', 0, math.max(budget, 1))
for _, key in ipairs(due) do
  redis.call('ZREM', P .. 'due', key)
  if redis.call('SCARD', P .. 'k:' .. key) == 0 and redis.call('SREM', P .. 'on', key) == 1 then
    enqueue(key, false, now, tonumber(ARGV[4]), ARGV[5])
  end
end
if #due >= math.max(budget, 1) then more = 1 end
local nextDue = redis.call('ZRANGE', P .. 'due', 0, 0, 'WITHSCORES')[2] or -1
local out = {enqueued, redis.call('ZCARD', P .. 'q'), nextDue, more}
for _, t in ipairs(dropped) do out[#out + 1] = t end
return out
`

/** ARGV: P, member. Its deadline becomes 0: the next sweep reaps it. */
export const RETIRE = `
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then redis.call('ZADD', KEYS[1], 0, ARGV[2]) end
return 1
`

/** ARGV: P, n, now, hidden until. Returns {queue length, job JSON...}; each claimed job's attempts counted. */
export const CLAIM = `
local P = ARGV[1]
local out = {0}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'ready', '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[2]))) do
  local json = redis.call('HGET', P .. 'jobs', id)
  if json then
    local job = cjson.decode(json)
    job.a = job.a + 1
    json = cjson.encode(job)
    redis.call('HSET', P .. 'jobs', id, json)
    redis.call('ZADD', P .. 'ready', ARGV[4], id)
    out[#out + 1] = json
  else
    redis.call('ZREM', P .. 'ready', id)
    redis.call('ZREM', P .. 'q', id)
  end
end
out[1] = redis.call('ZCARD', P .. 'q')
return out
`

/** ARGV: P, id. Delivered, or given up. */
export const REMOVE = `
local P = ARGV[1]
redis.call('HDEL', P .. 'jobs', ARGV[2])
redis.call('ZREM', P .. 'ready', ARGV[2])
redis.call('ZREM', P .. 'q', ARGV[2])
return 1
`

/** ARGV: P, id, at. Visible again at `at`, if it is still queued. */
export const RETRY = `
redis.call('ZADD', ARGV[1] .. 'ready', 'XX', ARGV[3], ARGV[2])
return 1
`

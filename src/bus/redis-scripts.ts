import type { CommandClient } from '../redis/connection.js'

/* The Redis bus's key layout and its Lua scripts (src/bus/broker-redis.ts runs them). */

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
 * A versioned publish (ARGV[11], '' = none) at or below the channel's last version (meta field v) is dropped: not
 * stored, not published, answered 'stale' with the channel's top.
 * ARGV: tail, candidate epoch, history size, history ttl, meta ttl, idempotency ttl, pub/sub channel, channel JSON,
 * content hash ('' = no key), ts, version.
 */
export const publishLua = (publish: 'PUBLISH' | 'SPUBLISH'): string => `
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
if ARGV[11] ~= '' and epoch then
  local last = redis.call('HGET', KEYS[1], 'v')
  if last and tonumber(ARGV[11]) <= tonumber(last) then return {'stale', tonumber(redis.call('HGET', KEYS[1], 'o')), epoch} end
end
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0, 'r', replid)
end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'v', ARGV[11]) end
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
export const HISTORY_LUA = `
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
export const RESTART_EPOCH_LUA = `
${REPLID_LUA}
${LINEAGE_LUA}
local meta = redis.call('HMGET', KEYS[1], 'e', 'o', 'pe', 'po', 'pl')
if meta[1] ~= ARGV[1] or tonumber(meta[2]) >= tonumber(ARGV[2]) then return 0 end
local pl = meta[5]
if meta[3] then pl = lineageAppend(pl, meta[3], meta[4]) end
redis.call('HSET', KEYS[1], 'e', ARGV[3], 'r', replid, 'pe', meta[1], 'po', meta[2], 'pl', pl or '')
return 1
`

export type WithScripts = CommandClient & {
  heraldPublish: (...args: Array<string | number>) => Promise<[string, number | string, string?]>
  heraldHistory: (...args: Array<string | number>) => Promise<[string, number, number, Array<[string, string[]]>, string, number, string]>
  heraldRestartEpoch: (...args: Array<string | number>) => Promise<number>
}

--[[
checkpoint_save: write one new version of a checkpoint, atomically.

KEYS[1]  the task's record hash (<prefix>:{ckpt:<namespace>}:d:<task>)  fields v, t, s, w
         (and d, the state, in records written before the state got its own key)
KEYS[2]  the task's history list (<prefix>:{ckpt:<namespace>}:h:<task>)
KEYS[3]  the namespace's index zset (<prefix>:{ckpt:<namespace>}:index), score 0, member = task
KEYS[4]  the task's state string (<prefix>:{ckpt:<namespace>}:b:<task>)
KEYS[5]  the staging key that holds the new state: the caller SETs it (with a TTL) on the same
         connection just before this script, in the same pipelined round trip (unused, but
         named, when the state comes inline in ARGV[10])
ARGV[1]  expected version: "" = save unconditionally, "0" = the task must not exist yet,
         n = the stored version must still be n
ARGV[2]  time to live in milliseconds, "0" = keep forever
ARGV[3]  history entries to keep (0 = none)
ARGV[4]  the encoded task id (index member)
ARGV[5]  "1" = replace the step results field with ARGV[6], "0" = keep the stored one
ARGV[6]  the serialized step results (ignored unless ARGV[5] == "1")
ARGV[7]  this save's write id (random, chosen by the caller; the same on a retry)
ARGV[8]  prior write ids: "" or the space-separated ids of earlier saves of this caller whose
         outcome is unknown; if one of them is the stored one, the fence counts as passed
ARGV[9]  "staged": the state is in KEYS[5]; "inline": the state is ARGV[10]
ARGV[10] the state, when inline (small states: one EVALSHA is cheaper than a pipeline)

Returns  {1, new_version, updated_at_ms}   saved (or: this very write id was already saved)
         {0, current_version}              conflict: nothing written
         {-1, reason}                      the stored record is unreadable: nothing written
         {-2}                              the staging key is missing: nothing written

Why one script: the version check, the state, the version, the timestamp, the TTL, the history
entry and the index entry are one decision. Split across round trips, two writers that both
read version n would both write n + 1 and one of them would silently erase the other's work.
Why a large state is staged and RENAMEd, not passed in ARGV: Redis copies every ARGV string
into a Lua string (about 1.2 us per KB: 120 us for 100 KB), while RENAME moves the value in
O(1). A small state comes inline: then one EVALSHA beats a two-command pipeline.
Why write ids: a save whose reply was lost may have been stored. Sent again with the same id it
is recognized and reported as saved, instead of failing its own fence as "another writer".
Why Redis TIME: every process of a fleet stamps updated_at from the same clock.
]]
local staged = ARGV[9] == 'staged'
if staged and redis.call('EXISTS', KEYS[5]) == 0 then
  return {-2}
end
local kind = redis.call('TYPE', KEYS[1])
kind = kind['ok'] or kind
local current = 0
local stored_wid = false
local legacy = false
if kind == 'hash' then
  -- 'd' is only set in records written before the state got its own key (then dropped).
  local meta = redis.call('HMGET', KEYS[1], 'v', 'w', 't', 'd')
  legacy = meta[4] ~= false
  current = tonumber(meta[1])
  if current == nil or current < 1 or current ~= math.floor(current) then
    redis.call('DEL', KEYS[5])
    return {-1, 'version field is ' .. tostring(meta[1])}
  end
  stored_wid = meta[2]
  if stored_wid == ARGV[7] then
    -- This save was stored already; its reply was lost. Rewriting the write id (same value)
    -- is a write of its own, so a WAIT after this script also covers the original save.
    redis.call('DEL', KEYS[5])
    redis.call('HSET', KEYS[1], 'w', ARGV[7])
    return {1, current, tonumber(meta[3]) or 0}
  end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[5])
  return {-1, 'the key holds a ' .. kind .. ', not a hash'}
end

if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then
  -- The caller's own earlier save (outcome unknown to it) counts as the version it expected.
  local own = stored_wid and stored_wid ~= '' and
    string.find(' ' .. ARGV[8] .. ' ', ' ' .. stored_wid .. ' ', 1, true)
  if not own then
    redis.call('DEL', KEYS[5])
    return {0, current}
  end
end

local version = current + 1
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if staged then
  redis.call('RENAME', KEYS[5], KEYS[4])
else
  redis.call('SET', KEYS[4], ARGV[10])
end
redis.call('HSET', KEYS[1], 'v', version, 't', now_ms, 'w', ARGV[7])
if legacy then
  redis.call('HDEL', KEYS[1], 'd')
end
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 's', ARGV[6])
end

local keep = tonumber(ARGV[3])
if keep > 0 then
  -- "<version> <updated_at_ms> <state>": the state may hold any byte, so it goes last.
  -- (Reading the state into Lua costs what the staging avoids: only when history is kept.)
  local data = redis.call('GET', KEYS[4])
  redis.call('LPUSH', KEYS[2], string.format('%d %d ', version, now_ms) .. data)
  redis.call('LTRIM', KEYS[2], 0, keep - 1)
else
  redis.call('DEL', KEYS[2])
end

local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
  if keep > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
else
  redis.call('PERSIST', KEYS[1])
  if staged then
    redis.call('PERSIST', KEYS[4])  -- RENAME kept the staging key's TTL; SET cleared it
  end
  if keep > 0 then
    redis.call('PERSIST', KEYS[2])
  end
end

-- The index is never expired member by member: checkpoint_list drops members whose record
-- hash is gone (expired or deleted behind our back) when it meets them.
redis.call('ZADD', KEYS[3], 0, ARGV[4])
return {1, version, now_ms}

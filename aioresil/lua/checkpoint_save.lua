--[[
checkpoint_save: write one new version of a checkpoint, atomically.

KEYS[1]  the task's data hash  (<prefix>:{ckpt:<namespace>}:d:<task>)  fields d, v, t, s
KEYS[2]  the task's history list (<prefix>:{ckpt:<namespace>}:h:<task>)
KEYS[3]  the namespace's index zset (<prefix>:{ckpt:<namespace>}:index), score 0, member = task
ARGV[1]  expected version: "" = save unconditionally, "0" = the task must not exist yet,
         n = the stored version must still be n
ARGV[2]  the serialized state
ARGV[3]  time to live in milliseconds, "0" = keep forever
ARGV[4]  history entries to keep (0 = none)
ARGV[5]  the encoded task id (index member)
ARGV[6]  "1" = replace the step results field with ARGV[7], "0" = keep the stored one
ARGV[7]  the serialized step results (ignored unless ARGV[6] == "1")

Returns  {1, new_version, updated_at_ms}   saved
         {0, current_version}              conflict: nothing written
         {-1, reason}                      the stored record is unreadable: nothing written

Why one script: the version check, the data, the version, the timestamp, the TTL, the history
entry and the index entry are one decision. Split across round trips, two writers that both
read version n would both write n + 1 and one of them would silently erase the other's work.
Why Redis TIME: every process of a fleet stamps updated_at from the same clock.
]]
local kind = redis.call('TYPE', KEYS[1])
kind = kind['ok'] or kind
local current = 0
if kind == 'hash' then
  local raw = redis.call('HGET', KEYS[1], 'v')
  current = tonumber(raw)
  if current == nil or current < 1 or current ~= math.floor(current) then
    return {-1, 'version field is ' .. tostring(raw)}
  end
elseif kind ~= 'none' then
  return {-1, 'the key holds a ' .. kind .. ', not a hash'}
end

if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then
  return {0, current}
end

local version = current + 1
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'v', version, 't', now_ms)
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 's', ARGV[7])
end

local keep = tonumber(ARGV[4])
if keep > 0 then
  -- "<version> <updated_at_ms> <state>": the state may hold any byte, so it goes last.
  redis.call('LPUSH', KEYS[2], string.format('%d %d ', version, now_ms) .. ARGV[2])
  redis.call('LTRIM', KEYS[2], 0, keep - 1)
else
  redis.call('DEL', KEYS[2])
end

local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  if keep > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
else
  redis.call('PERSIST', KEYS[1])
  if keep > 0 then
    redis.call('PERSIST', KEYS[2])
  end
end

-- The index is never expired member by member: checkpoint_list drops members whose data
-- hash is gone (expired or deleted behind our back) when it meets them.
redis.call('ZADD', KEYS[3], 0, ARGV[5])
return {1, version, now_ms}

-- redrive_claim: lease one due dead letter to a redrive worker.
--
-- KEYS[1]  base.."rd:due"    ZSET id -> due ms           KEYS[2]  base.."lease" (the queue's)
-- KEYS[3]  base.."tok"       HASH id -> fencing token    KEYS[4]  base.."seq"
-- KEYS[5]  base.."rd:stats"  HASH of counters            KEYS[6]  base.."e:"..id
--   (base = "<prefix>:{dlq:<queue>}:": every key shares the queue's one hash tag)
-- ARGV[1]  entry id     ARGV[2]  now in ms or "" (Redis TIME)     ARGV[3]  lease in ms
--
-- Returns {0} when the entry is gone (and unschedules it), {-2, ms_until_due} when it is not
-- due yet, {-1, ms_until_free} when someone holds a live lease on it, or
-- {1, token, lease_deadline_ms, field, value, ...} with the entry's fields.
--
-- Why the due time moves to the lease deadline: a worker killed with -9 never reports back,
-- and then the entry is simply due again when its lease expires (never lost, and never run
-- by two workers at once: a second claim before that sees the live lease). The lease and the
-- token are the queue's own (dlq_claim's), so a manual "dlq retry" and the worker exclude
-- each other too. The marker field "rl" says a redrive lease was taken; finding it set on
-- the next claim means the previous holder died (counted as "lease_expired").
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local id = ARGV[1]
if redis.call('EXISTS', KEYS[6]) == 0 then
  redis.call('ZREM', KEYS[1], id)
  return {0}
end
local due = redis.call('ZSCORE', KEYS[1], id)
if not due then
  return {0}
end
local now = now_ms(ARGV[2])
if tonumber(due) > now then
  return {-2, math.ceil(tonumber(due) - now)}
end
local held = redis.call('ZSCORE', KEYS[2], id)
if held and tonumber(held) > now then
  redis.call('ZADD', KEYS[1], held, id)
  return {-1, math.ceil(tonumber(held) - now)}
end
if redis.call('HGET', KEYS[6], 'rl') then
  redis.call('HINCRBY', KEYS[5], 'lease_expired', 1)
end
local token = redis.call('INCR', KEYS[4])
local deadline = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], deadline, id)
redis.call('HSET', KEYS[3], id, token)
redis.call('ZADD', KEYS[1], deadline, id)
redis.call('HSET', KEYS[6], 'rl', token)
redis.call('HINCRBY', KEYS[5], 'claimed', 1)
local reply = {1, token, deadline}
local fields = redis.call('HGETALL', KEYS[6])
for _, v in ipairs(fields) do
  table.insert(reply, v)
end
return reply

-- redrive_settle: end a redrive lease: handled (delete), failed (reschedule or park), released.
--
-- KEYS[1]  base.."tok"        KEYS[2]  base.."lease"       KEYS[3]  base.."rd:due"
-- KEYS[4]  base.."rd:parked"  KEYS[5]  base.."rd:stats"    KEYS[6]  base.."idx"
-- KEYS[7]  base.."counts"     KEYS[8]  base.."e:"..id      KEYS[9]  base.."t:"..tk (its type)
--   (base = "<prefix>:{dlq:<queue>}:": every key shares the queue's one hash tag)
-- ARGV[1]  "ok" | "fail" | "release"
-- ARGV[2]  entry id     ARGV[3]  fencing token from redrive_claim
-- ARGV[4]  now in ms or "" (Redis TIME)
-- "fail" only:
-- ARGV[5]  ms until the next redrive, or "park" (attempts exhausted: hand it to an operator)
-- ARGV[6]  new failed_at ms, 13 digits   ARGV[7]  error type   ARGV[8]  message
-- ARGV[9]  traceback
--
-- Returns 0 when the token no longer matches (the lease expired and another worker holds the
-- entry, or it was removed): nothing changes. Otherwise 1 for "ok"/"release", and for "fail"
-- the entry's redrive attempts so far (negative when it was parked).
--
-- Why one script: the entry, its indexes, its lease and its place in the schedule change
-- together, so a kill -9 at any moment leaves the entry either leased (and due again when
-- the lease expires) or settled, never lost and never scheduled twice.
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local op, id = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], id) ~= ARGV[3] then
  return 0
end
local now = now_ms(ARGV[4])
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[8], 'rl')
if op == 'release' then
  redis.call('ZADD', KEYS[3], now, id)
  return 1
end
local v = redis.call('HMGET', KEYS[8], 'ty', 'fa')
local member = v[2] .. '|' .. id
if op == 'ok' then
  redis.call('ZREM', KEYS[6], member)
  redis.call('ZREM', KEYS[9], member)
  if redis.call('HINCRBY', KEYS[7], v[1], -1) <= 0 then
    redis.call('HDEL', KEYS[7], v[1])
  end
  redis.call('DEL', KEYS[8])
  redis.call('ZREM', KEYS[3], id)
  redis.call('HINCRBY', KEYS[5], 'handled', 1)
  return 1
end
-- "fail": like dlq_nack (the entry moves to "now" in the time indexes), plus the schedule.
local new_member = ARGV[6] .. '|' .. id
redis.call('ZREM', KEYS[6], member)
redis.call('ZREM', KEYS[9], member)
redis.call('ZADD', KEYS[6], 0, new_member)
redis.call('ZADD', KEYS[9], 0, new_member)
redis.call('HSET', KEYS[8], 'fa', ARGV[6], 'et', ARGV[7], 'em', ARGV[8], 'tb', ARGV[9])
redis.call('HINCRBY', KEYS[8], 'a', 1)
local runs = redis.call('HINCRBY', KEYS[8], 'rn', 1)
redis.call('HINCRBY', KEYS[5], 'failed', 1)
if ARGV[5] == 'park' then
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], now, id)
  redis.call('HINCRBY', KEYS[5], 'parked', 1)
  return -runs
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), id)
return runs

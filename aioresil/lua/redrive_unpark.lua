-- redrive_unpark: an operator hands a parked dead letter back to the redrive schedule.
--
-- KEYS[1]  base.."rd:parked"   KEYS[2]  base.."rd:due"   KEYS[3]  base.."e:"..id
-- ARGV[1]  entry id            ARGV[2]  now in ms or "" (Redis TIME)
--
-- Returns 1 when the entry was parked and is due now (its redrive attempts start from 0),
-- 0 when it was not parked (or no longer exists: then it is only forgotten).
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[3]) == 0 then
  return 0
end
redis.call('HSET', KEYS[3], 'rn', 0)
redis.call('ZADD', KEYS[2], now_ms(ARGV[2]), ARGV[1])
return 1

-- redrive_stats: the redrive schedule of one queue at one moment.
--
-- KEYS[1]  base.."rd:due"   KEYS[2]  base.."rd:parked"   KEYS[3]  base.."lease"
-- KEYS[4]  base.."rd:stats"
-- ARGV[1]  now in ms or "" (Redis TIME)
--
-- Returns {scheduled, due now, leased now, parked, field, value, ...} (the counters:
-- claimed, handled, failed, parked, lease_expired).
--
-- Why a script: the four counts and the counters come from one moment.
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local now = now_ms(ARGV[1])
local reply = {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCOUNT', KEYS[1], '-inf', now),
  redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf'),
  redis.call('ZCARD', KEYS[2]),
}
for _, v in ipairs(redis.call('HGETALL', KEYS[4])) do
  table.insert(reply, v)
end
return reply

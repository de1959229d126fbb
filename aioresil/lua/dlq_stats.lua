-- dlq_stats: every statistic of the queue in one consistent read, without scanning entries.
--
-- KEYS[1]  base.."idx"
-- ARGV[1]  base
-- ARGV[2]  "[<13 digits>": the start of the last 24 hours
-- ARGV[3]  now in ms, or "" to use Redis TIME (for counting live leases)
--
-- Returns {total, recent_24h, oldest_member or "", newest_member or "", evicted, expired,
--          in_flight, type, count, type, count, ...}.
--
-- Why a script: one round trip and one snapshot; every call is O(log n) (ZCARD, ZLEXCOUNT,
-- ZRANGE of one end, ZCOUNT) plus one read of the per-type counter hash.
local base, idx = ARGV[1], KEYS[1]
local oldest = redis.call('ZRANGE', idx, 0, 0)[1] or ''
local newest = redis.call('ZRANGE', idx, -1, -1)[1] or ''
local now = dlq_now(ARGV[3])
local reply = {
  redis.call('ZCARD', idx),
  redis.call('ZLEXCOUNT', idx, ARGV[2], '+'),
  oldest,
  newest,
  tonumber(redis.call('GET', base .. 'evicted') or '0'),
  tonumber(redis.call('GET', base .. 'expired') or '0'),
  redis.call('ZCOUNT', base .. 'lease', '(' .. now, '+inf'),
}
for _, v in ipairs(redis.call('HGETALL', base .. 'counts')) do
  table.insert(reply, v)
end
return reply

-- dlq_stats: every statistic of the queue in one consistent read, without scanning entries.
--
-- KEYS[1..7] the queue's keys (see dlq_lib)
-- ARGV[1]  "[<13 digits>": the start of the last 24 hours
-- ARGV[2]  now in ms, or "" to use Redis TIME (for counting live leases)
--
-- Returns {total, recent_24h, oldest_member or "", newest_member or "", evicted, expired,
--          in_flight, type, count, type, count, ...}.
--
-- Why a script: one round trip and one snapshot; every call is O(log n) (ZCARD, ZLEXCOUNT,
-- ZRANGE of one end, ZCOUNT) plus one read of the per-type counter hash.
local idx = Q_IDX
local oldest = redis.call('ZRANGE', idx, 0, 0)[1] or ''
local newest = redis.call('ZRANGE', idx, -1, -1)[1] or ''
local now = dlq_now(ARGV[2])
local reply = {
  redis.call('ZCARD', idx),
  redis.call('ZLEXCOUNT', idx, ARGV[1], '+'),
  oldest,
  newest,
  tonumber(redis.call('GET', Q_EVICTED) or '0'),
  tonumber(redis.call('GET', Q_EXPIRED) or '0'),
  redis.call('ZCOUNT', Q_LEASE, '(' .. now, '+inf'),
}
for _, v in ipairs(redis.call('HGETALL', Q_COUNTS)) do
  table.insert(reply, v)
end
return reply

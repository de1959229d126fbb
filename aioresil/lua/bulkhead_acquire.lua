-- bulkhead_acquire: take one slot of a fleet-wide bulkhead, as an expiring lease.
--
-- KEYS[1]  the bulkhead's lease ZSET: member = lease id, score = lease deadline (ms, Redis TIME)
-- ARGV[1]  lease id (unique per call, chosen by the caller)
-- ARGV[2]  max concurrent calls across the fleet (integer >= 1)
-- ARGV[3]  lease time to live in milliseconds (integer >= 1)
--
-- Returns  {1, held}                 granted; held = leases now held, this one included
--          {0, held, ms_to_expiry}   full; ms until the earliest lease expires
--
-- Why a ZSET of deadlines: a process that dies holding a slot (SIGKILL, lost network) would
-- otherwise keep it forever. Expired leases are reclaimed here, inside the same script that
-- counts and grants, so no caller can see a count that a concurrent reclaim is changing.
-- Why Redis TIME: every process of the fleet judges lease expiry on one clock.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held < limit then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
    -- The key outlives its longest lease (leases of other processes may be longer).
    if redis.call('PTTL', KEYS[1]) < ttl + 1000 then
        redis.call('PEXPIRE', KEYS[1], ttl + 1000)
    end
    return {1, held + 1}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, held, math.max(tonumber(first[2]) - now, 0)}

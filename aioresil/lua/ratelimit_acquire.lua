-- ratelimit_acquire: take tokens from a fleet-wide token bucket.
--
-- KEYS[1]  the bucket HASH: tokens (float, as text), ts (last refill, microseconds, Redis TIME)
-- ARGV[1]  capacity: the most tokens the bucket holds (the burst), >= cost
-- ARGV[2]  refill rate in tokens per second (> 0)
-- ARGV[3]  cost of this call in tokens (usually 1)
--
-- Returns  {1, 0}        granted (the tokens are taken)
--          {0, wait_us}  refused; microseconds until enough tokens will have accrued
--
-- Why one script: refill, check and take must be atomic, or two processes both take the
-- last token. Why Redis TIME: the fleet's clocks disagree; the bucket must accrue on one.
-- A refusal writes nothing (the refill is recomputed from ts next time).
-- The key expires once a full bucket is certain, so idle limiters leave nothing behind.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
end
if now > ts then
    tokens = math.min(capacity, tokens + (now - ts) * rate / 1000000)
    ts = now
end

if tokens >= cost then
    tokens = tokens - cost
    redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
        'ts', string.format('%d', ts))
    redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
    return {1, 0}
end
return {0, math.ceil((cost - tokens) / rate * 1000000)}

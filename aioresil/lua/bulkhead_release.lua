-- bulkhead_release: give back one slot of a fleet-wide bulkhead.
--
-- KEYS[1]  the bulkhead's lease ZSET (see bulkhead_acquire.lua)
-- ARGV[1]  the lease id the acquire granted
--
-- Returns  1 when the lease was held, 0 when it had already expired and been reclaimed
--          (the call outlived its lease: the caller logs it).
--
-- Why a script for one ZREM: every state change of aioresil on Redis is one script call, so
-- the contract (keys, return values) is written down next to the code that implements it.

return redis.call('ZREM', KEYS[1], ARGV[1])

-- dlq_nack: return a leased entry to the queue after a failed retry.
--
-- KEYS[1]  base.."tok"
-- ARGV[1]  base       ARGV[2]  entry id       ARGV[3]  fencing token from dlq_claim
-- ARGV[4]  new failed_at ms, 13 digits
-- ARGV[5]  error type     ARGV[6]  error message     ARGV[7]  traceback
--
-- Returns the entry's new attempt count, or 0 when the token no longer matches (nothing
-- changes: another worker holds the entry now, or it was removed).
--
-- Why one script: the attempt count, the error, the time indexes (the entry moves to "now")
-- and the release of the lease change together.
local base, id = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], id) ~= ARGV[3] then
  return 0
end
local ek = base .. 'e:' .. id
local v = redis.call('HMGET', ek, 'tk', 'fa')
local old_member = v[2] .. '|' .. id
local new_member = ARGV[4] .. '|' .. id
local tkey = base .. 't:' .. v[1]
redis.call('ZREM', base .. 'idx', old_member)
redis.call('ZREM', tkey, old_member)
redis.call('ZADD', base .. 'idx', 0, new_member)
redis.call('ZADD', tkey, 0, new_member)
redis.call('HSET', ek, 'fa', ARGV[4], 'et', ARGV[5], 'em', ARGV[6], 'tb', ARGV[7])
local attempts = redis.call('HINCRBY', ek, 'a', 1)
redis.call('ZREM', base .. 'lease', id)
redis.call('HDEL', KEYS[1], id)
return attempts

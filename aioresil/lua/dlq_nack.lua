-- dlq_nack: return a leased entry to the queue after a failed retry.
--
-- KEYS[1..7] the queue's keys (see dlq_lib)      KEYS[8]  base.."e:"..id
-- ARGV[1]  entry id       ARGV[2]  fencing token from dlq_claim
-- ARGV[3]  new failed_at ms, 13 digits
-- ARGV[4]  error type     ARGV[5]  error message     ARGV[6]  traceback
-- (the entry's type index, base.."t:"..tk, is named by the entry's own tk field)
--
-- Returns the entry's new attempt count, or 0 when the token no longer matches (nothing
-- changes: another worker holds the entry now, or it was removed).
--
-- Why one script: the attempt count, the error, the time indexes (the entry moves to "now")
-- and the release of the lease change together.
local id, ek = ARGV[1], KEYS[8]
if redis.call('HGET', Q_TOK, id) ~= ARGV[2] then
  return 0
end
local v = redis.call('HMGET', ek, 'tk', 'fa')
local old_member = v[2] .. '|' .. id
local new_member = ARGV[3] .. '|' .. id
local tkey = dlq_type_key(v[1])
redis.call('ZREM', Q_IDX, old_member)
redis.call('ZREM', tkey, old_member)
redis.call('ZADD', Q_IDX, 0, new_member)
redis.call('ZADD', tkey, 0, new_member)
redis.call('HSET', ek, 'fa', ARGV[3], 'et', ARGV[4], 'em', ARGV[5], 'tb', ARGV[6])
local attempts = redis.call('HINCRBY', ek, 'a', 1)
redis.call('ZREM', Q_LEASE, id)
redis.call('HDEL', Q_TOK, id)
return attempts

-- dlq_release: give a lease back unchanged (the retry was cancelled before an outcome).
--
-- KEYS[1]  base.."tok"
-- ARGV[1]  base       ARGV[2]  entry id       ARGV[3]  fencing token from dlq_claim
--
-- Returns 1 when the lease was released, 0 when the token no longer matches.
--
-- Why: a cancelled retry_all() should not leave its entries locked until their leases expire.
local base, id = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], id) ~= ARGV[3] then
  return 0
end
redis.call('ZREM', base .. 'lease', id)
redis.call('HDEL', KEYS[1], id)
return 1

-- dlq_release: give a lease back unchanged (the retry was cancelled before an outcome).
--
-- KEYS[1..7] the queue's keys (see dlq_lib)
-- ARGV[1]  entry id       ARGV[2]  fencing token from dlq_claim
--
-- Returns 1 when the lease was released, 0 when the token no longer matches.
--
-- Why: a cancelled retry_all() should not leave its entries locked until their leases expire.
local id = ARGV[1]
if redis.call('HGET', Q_TOK, id) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', Q_LEASE, id)
redis.call('HDEL', Q_TOK, id)
return 1

-- dlq_ack: delete an entry whose retry succeeded, if the caller still holds its lease.
--
-- KEYS[1]  base.."tok"
-- ARGV[1]  base       ARGV[2]  entry id       ARGV[3]  fencing token from dlq_claim
--
-- Returns 1 when the entry was deleted, 0 when the token no longer matches (the lease expired
-- and another worker claimed the entry, or the entry was removed): then nothing changes.
--
-- Why compare the token here: two workers that both ran the handler must not both delete (or
-- one delete and one return) the entry; only the latest lease holder may settle it.
local base, id = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], id) ~= ARGV[3] then
  return 0
end
dlq_remove(base, id)
return 1

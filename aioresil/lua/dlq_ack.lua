-- dlq_ack: delete an entry whose retry succeeded, if the caller still holds its lease.
--
-- KEYS[1..7] the queue's keys (see dlq_lib)      KEYS[8]  base.."e:"..id
-- ARGV[1]  entry id       ARGV[2]  fencing token from dlq_claim
--
-- Returns 1 when the entry was deleted, 0 when the token no longer matches (the lease expired
-- and another worker claimed the entry, or the entry was removed): then nothing changes.
--
-- Why compare the token here: two workers that both ran the handler must not both delete (or
-- one delete and one return) the entry; only the latest lease holder may settle it.
local id = ARGV[1]
if redis.call('HGET', Q_TOK, id) ~= ARGV[2] then
  return 0
end
dlq_remove(id)
return 1

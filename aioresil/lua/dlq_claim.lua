-- dlq_claim: lease one entry to a retrying worker.
--
-- KEYS[1..7] the queue's keys (see dlq_lib)      KEYS[8]  base.."e:"..id
-- ARGV[1]  entry id
-- ARGV[2]  now in ms, or "" to use Redis TIME (the one time base of every lease decision)
-- ARGV[3]  lease length in ms
--
-- Returns {0} when the entry does not exist, {-1, deadline_ms} when another worker holds a live
-- lease, or {1, token, deadline_ms, field, value, ...} with the entry's fields.
--
-- Why a lease and not "remove, then push back": the entry never leaves the queue until the
-- handler succeeded and ack() ran (at-least-once). A crashed worker's lease simply expires. The
-- token (a per-queue INCR) fences a worker whose lease expired and was taken by another: its
-- ack/nack no longer matches and changes nothing.
local id, ek = ARGV[1], KEYS[8]
if redis.call('EXISTS', ek) == 0 then
  return {0}
end
local now = dlq_now(ARGV[2])
local held = redis.call('ZSCORE', Q_LEASE, id)
if held and tonumber(held) > now then
  return {-1, tonumber(held)}
end
local token = redis.call('INCR', Q_SEQ)
local deadline = now + tonumber(ARGV[3])
redis.call('ZADD', Q_LEASE, deadline, id)
redis.call('HSET', Q_TOK, id, token)
local reply = {1, token, deadline}
local fields = redis.call('HGETALL', ek)
for _, v in ipairs(fields) do
  table.insert(reply, v)
end
return reply

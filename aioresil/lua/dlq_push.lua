-- dlq_push: store one dead letter with all its indexes, applying retention and the cap.
--
-- KEYS[1..7] the queue's keys (see dlq_lib)
-- KEYS[8]  base.."e:"..id            KEYS[9]  base.."t:"..tk (the entry's type index)
-- ARGV[1]  entry id                  ARGV[2]  task_type
-- ARGV[3]  encoded task_type (tk)    ARGV[4]  failed_at ms, 13 digits
-- ARGV[5]  max_entries               ARGV[6]  overflow: "reject" | "evict_oldest"
-- ARGV[7]  retention bound "(<13 digits>" (entries failed before it are dropped) or ""
-- ARGV[8..] the other entry fields, as field/value pairs
--
-- Returns {1, evicted_id...} when stored, {0} when the queue is full and overflow is "reject"
-- (nothing stored), {2} when an entry with this id already exists (a spool replay of a push
-- whose reply was lost: pushing is idempotent by id).
--
-- Why one script: the entry, both indexes and the per-type counter change together or not at
-- all, so a crash or a concurrent reader never sees half an entry, and the cap cannot be
-- overshot by two pushers that both read "one slot left".
local id, idx, ek = ARGV[1], Q_IDX, KEYS[8]
if redis.call('EXISTS', ek) == 1 then
  -- Rewrite one field with its own value: a write of this script's own, so a WAIT after it
  -- (replicated acknowledgement) also covers the earlier push that stored the entry.
  redis.call('HSET', ek, 'fa', redis.call('HGET', ek, 'fa'))
  return {2}
end
-- Retention, bounded work per push (the rest goes on the next pushes or purge()).
if ARGV[7] ~= '' then
  local old = redis.call('ZRANGEBYLEX', idx, '-', ARGV[7], 'LIMIT', 0, 100)
  for _, member in ipairs(old) do
    if dlq_remove(dlq_member_id(member)) then
      redis.call('INCR', Q_EXPIRED)
    end
  end
end
local reply = {1}
local max_entries = tonumber(ARGV[5])
local size = redis.call('ZCARD', idx)
if size >= max_entries then
  if ARGV[6] ~= 'evict_oldest' then
    return {0}
  end
  while size >= max_entries do
    local oldest = redis.call('ZRANGE', idx, 0, 0)[1]
    local victim = dlq_member_id(oldest)
    dlq_remove(victim)
    redis.call('INCR', Q_EVICTED)
    table.insert(reply, victim)
    size = size - 1
  end
end
local member = ARGV[4] .. '|' .. id
local fields = {'ty', ARGV[2], 'tk', ARGV[3], 'fa', ARGV[4]}
for i = 8, #ARGV do
  table.insert(fields, ARGV[i])
end
redis.call('HSET', ek, unpack(fields))
redis.call('ZADD', idx, 0, member)
redis.call('ZADD', KEYS[9], 0, member)
redis.call('HINCRBY', Q_COUNTS, ARGV[2], 1)
return reply

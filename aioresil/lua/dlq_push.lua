-- dlq_push: store one dead letter with all its indexes, applying retention and the cap.
--
-- KEYS[1]  base.."idx" (routes the script to the queue's slot)
-- ARGV[1]  base (see dlq_lib)        ARGV[2]  entry id
-- ARGV[3]  task_type                 ARGV[4]  encoded task_type (tk)
-- ARGV[5]  failed_at ms, 13 digits   ARGV[6]  max_entries
-- ARGV[7]  overflow: "reject" | "evict_oldest"
-- ARGV[8]  retention bound "(<13 digits>" (entries failed before it are dropped) or ""
-- ARGV[9..] the other entry fields, as field/value pairs
--
-- Returns {1, evicted_id...} when stored, {0} when the queue is full and overflow is "reject"
-- (nothing stored), {2} when an entry with this id already exists (a spool replay of a push
-- whose reply was lost: pushing is idempotent by id).
--
-- Why one script: the entry, both indexes and the per-type counter change together or not at
-- all, so a crash or a concurrent reader never sees half an entry, and the cap cannot be
-- overshot by two pushers that both read "one slot left".
local base, id = ARGV[1], ARGV[2]
local idx = KEYS[1]
local ek = base .. 'e:' .. id
if redis.call('EXISTS', ek) == 1 then
  -- Rewrite one field with its own value: a write of this script's own, so a WAIT after it
  -- (replicated acknowledgement) also covers the earlier push that stored the entry.
  redis.call('HSET', ek, 'fa', redis.call('HGET', ek, 'fa'))
  return {2}
end
-- Retention, bounded work per push (the rest goes on the next pushes or purge()).
if ARGV[8] ~= '' then
  local old = redis.call('ZRANGEBYLEX', idx, '-', ARGV[8], 'LIMIT', 0, 100)
  for _, member in ipairs(old) do
    if dlq_remove(base, dlq_member_id(member)) then
      redis.call('INCR', base .. 'expired')
    end
  end
end
local reply = {1}
local max_entries = tonumber(ARGV[6])
local size = redis.call('ZCARD', idx)
if size >= max_entries then
  if ARGV[7] ~= 'evict_oldest' then
    return {0}
  end
  while size >= max_entries do
    local oldest = redis.call('ZRANGE', idx, 0, 0)[1]
    local victim = dlq_member_id(oldest)
    dlq_remove(base, victim)
    redis.call('INCR', base .. 'evicted')
    table.insert(reply, victim)
    size = size - 1
  end
end
local member = ARGV[5] .. '|' .. id
local fields = {'ty', ARGV[3], 'tk', ARGV[4], 'fa', ARGV[5]}
for i = 9, #ARGV do
  table.insert(fields, ARGV[i])
end
redis.call('HSET', ek, unpack(fields))
redis.call('ZADD', idx, 0, member)
redis.call('ZADD', base .. 't:' .. ARGV[4], 0, member)
redis.call('HINCRBY', base .. 'counts', ARGV[3], 1)
return reply

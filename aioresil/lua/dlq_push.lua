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
-- overshot by two pushers that both read "one slot left". The work is dlq_lib's dlq_store,
-- shared with dlq_push_many.
local fields = {}
for i = 8, #ARGV do
  table.insert(fields, ARGV[i])
end
return dlq_store(ARGV[1], KEYS[8], KEYS[9], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]),
  ARGV[6], ARGV[7], fields)

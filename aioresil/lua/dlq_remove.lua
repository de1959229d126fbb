-- dlq_remove: delete one entry and every index that names it.
--
-- KEYS[1..7] the queue's keys (see dlq_lib)      KEYS[8]  base.."e:"..id
-- ARGV[1]  entry id
--
-- Returns 1 when the entry existed, else 0.
--
-- Why a script: the entry, both indexes and the per-type counter must change together.
if dlq_remove(ARGV[1]) then
  return 1
end
return 0

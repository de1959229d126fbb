-- dlq_remove: delete one entry and every index that names it.
--
-- KEYS[1]  base.."idx"
-- ARGV[1]  base       ARGV[2]  entry id
--
-- Returns 1 when the entry existed, else 0.
--
-- Why a script: the entry, both indexes and the per-type counter must change together.
if dlq_remove(ARGV[1], ARGV[2]) then
  return 1
end
return 0

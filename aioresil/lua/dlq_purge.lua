-- dlq_purge: delete up to a batch of the oldest entries of an index below a time bound.
--
-- KEYS[1..7] the queue's keys (see dlq_lib)
-- KEYS[8]  the index to purge from: KEYS[1] (every entry) or base.."t:"..tk (one task type)
-- ARGV[1]  upper lex bound: "(<13 digits>" (failed before that time) or "+" (everything)
-- ARGV[2]  batch size
--
-- Returns how many entries were deleted; the caller repeats while a full batch was deleted.
--
-- Why batches: one script blocks Redis while it runs, so purging a million entries in one call
-- would stall every other client (breakers included); each batch is still all-or-nothing per
-- entry, so no entry is ever left half deleted.
local members = redis.call('ZRANGEBYLEX', KEYS[8], '-', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local removed = 0
for _, member in ipairs(members) do
  if dlq_remove(dlq_member_id(member)) then
    removed = removed + 1
  end
end
return removed

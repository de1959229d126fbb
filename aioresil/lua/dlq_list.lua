-- dlq_list: one page of entries, newest first.
--
-- KEYS[1..7] the queue's keys (see dlq_lib)
-- KEYS[8]  the index to page through: KEYS[1] (every entry) or base.."t:"..tk (one task type)
-- ARGV[1]  upper lex bound ("+", "(<member>" for a cursor, or "(<13 digits>" for until)
-- ARGV[2]  lower lex bound ("-" or "[<13 digits>" for since)
-- ARGV[3]  page size
--
-- Returns {{member, field, value, ...}, ...}, newest first.
--
-- Why a script: the index range and the entries are read in one snapshot (a concurrent
-- remove cannot leave a listed id without its entry) and in one round trip; the cost is
-- O(log n + page size) whatever the queue's size.
local members = redis.call('ZREVRANGEBYLEX', KEYS[8], ARGV[1], ARGV[2], 'LIMIT', 0,
  tonumber(ARGV[3]))
local reply = {}
for _, member in ipairs(members) do
  local row = {member}
  for _, v in ipairs(redis.call('HGETALL', dlq_entry_key(dlq_member_id(member)))) do
    table.insert(row, v)
  end
  table.insert(reply, row)
end
return reply

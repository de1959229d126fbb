-- dlq_list: one page of entries, newest first.
--
-- KEYS[1]  base.."idx" (every entry) or base.."t:"..tk (one task type)
-- ARGV[1]  base
-- ARGV[2]  upper lex bound ("+", "(<member>" for a cursor, or "(<13 digits>" for until)
-- ARGV[3]  lower lex bound ("-" or "[<13 digits>" for since)
-- ARGV[4]  page size
--
-- Returns {{member, field, value, ...}, ...}, newest first.
--
-- Why a script: the index range and the entries are read in one snapshot (a concurrent
-- remove cannot leave a listed id without its entry) and in one round trip; the cost is
-- O(log n + page size) whatever the queue's size.
local base = ARGV[1]
local members = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0,
  tonumber(ARGV[4]))
local reply = {}
for _, member in ipairs(members) do
  local row = {member}
  for _, v in ipairs(redis.call('HGETALL', base .. 'e:' .. string.sub(member, 15))) do
    table.insert(row, v)
  end
  table.insert(reply, row)
end
return reply

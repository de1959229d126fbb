-- dlq_push_many: store a chunk of dead letters, in order, in one atomic step (push_prepared).
--
-- KEYS[1..7] the queue's keys (see dlq_lib)
-- KEYS[6 + 2i], KEYS[7 + 2i]  the i-th entry's (i = 1..n) base.."e:"..id and its type index
--                             base.."t:"..tk
-- ARGV[1]  max_entries    ARGV[2]  overflow: "reject" | "evict_oldest"
-- ARGV[3]  retention bound "(<13 digits>" or "" (as dlq_push)
-- ARGV[4..] per entry, in KEYS order: id, task_type, tk, failed_at (13 digits), m, then the
--          entry's m other field/value pairs (2m values)
--
-- Returns {{status, evicted_id...}, ...}: one dlq_push reply per entry tried, in order. It
-- stops after the first {0} (the queue is full and overflow is "reject"): the entries after
-- it are not stored, so a load stops where the queue refused it.
--
-- Why one script per chunk, not a pipeline of dlq_push calls: a chunk is applied entirely or
-- not at all, so a push_prepared cut by a timeout (or a lost reply) leaves whole chunks, and a
-- caller can tell which by reading one entry of the chunk in flight; a pipeline cut half-way
-- left an unknown prefix of it. The caller keeps chunks small (200 entries, 1 MiB of fields:
-- dlq.py's _PUSH_CHUNK) so that one call stays far below operation_timeout, whatever batch
-- the user asked for, and never blocks Redis (and every breaker on it) for long.
local max_entries, overflow, retention = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local replies = {}
local a, k = 4, 8
while a <= #ARGV do
  local m = tonumber(ARGV[a + 4])
  local fields = {}
  for j = a + 5, a + 4 + 2 * m do
    table.insert(fields, ARGV[j])
  end
  local reply = dlq_store(ARGV[a], KEYS[k], KEYS[k + 1], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
    max_entries, overflow, retention, fields)
  table.insert(replies, reply)
  if reply[1] == 0 then
    break
  end
  a = a + 5 + 2 * m
  k = k + 2
end
return replies

--[[
checkpoint_list: one page of a namespace's checkpoints, in task id order, from its index.

KEYS[1]  the namespace's index zset (<prefix>:{ckpt:<namespace>}:index)
ARGV[1]  the data key of the task whose encoded id is "" (<prefix>:{ckpt:<namespace>}:d:);
         a member's data key is ARGV[1] .. member
ARGV[2]  ZRANGEBYLEX min ("-", "[<encoded prefix>" or "(<cursor>")
ARGV[3]  ZRANGEBYLEX max ("+" or "[<encoded prefix>\xff")
ARGV[4]  page size (>= 1)
ARGV[5]  the most index members to examine in this call (bounds the script's run time)

Returns  {next_cursor, member, version, updated_at_ms, member, version, ...}
         next_cursor is "" when the listing is complete; version and updated_at_ms are "0"
         for a record that is unreadable (load() names the problem).

Why no KEYS/SCAN: the save script keeps the index, so a page costs O(log N + page).
Why it writes: members whose data hash expired (TTL) are dropped here, lazily.
Cluster note: the data keys are built here rather than passed in KEYS, because which members
a page holds is only known inside the script; they share the index's hash tag, so the script
still touches one slot.
]]
local limit = tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local out = {''}
local found = 0
local scanned = 0
local low = ARGV[2]
local last = nil
local exhausted = false
while found < limit and scanned < budget do
  local want = math.min(limit - found, budget - scanned)
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], low, ARGV[3], 'LIMIT', 0, want)
  for _, member in ipairs(batch) do
    scanned = scanned + 1
    last = member
    local key = ARGV[1] .. member
    local kind = redis.call('TYPE', key)
    kind = kind['ok'] or kind
    if kind == 'none' then
      redis.call('ZREM', KEYS[1], member)
    elseif kind == 'hash' then
      local meta = redis.call('HMGET', key, 'v', 't')
      found = found + 1
      out[#out + 1] = member
      out[#out + 1] = meta[1] or '0'
      out[#out + 1] = meta[2] or '0'
    else
      found = found + 1
      out[#out + 1] = member
      out[#out + 1] = '0'
      out[#out + 1] = '0'
    end
  end
  if #batch < want then
    exhausted = true
    break
  end
  low = '(' .. last
end
if not exhausted and last then
  out[1] = last
end
return out

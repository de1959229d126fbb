--[[ breaker_read.lua: a consistent, read-only snapshot of one or many breakers.

Why a script and not a pipeline of HGETALL/ZRANGE/TIME: the snapshot is atomic (no transition
can land between the reads), "now" comes from the server that holds the keys (one clock, as in
breaker.lua), and reading 1,000 breakers is one command with one reply, which costs the
client far less than 1,000 pipelined commands. On Redis Cluster, where the breakers live in
different slots, the client calls it once per breaker instead. It writes nothing.

KEYS[3i-2]  hash   breaker i's state (see breaker.lua)
KEYS[3i-1]  zset   breaker i's trial leases
KEYS[3i]    hash   breaker i's time-window buckets (read only if flag i is "1")
ARGV[1]     now in microseconds, or "" to use Redis TIME
ARGV[2]     one flag per breaker, "1" to include breaker i's time-window buckets (character i)

Why the flags travel as one string: the client packs every argument in Python; a thousand
one-character arguments cost more than the script's reads.

Returns {now_us, state_1, live_1, window_1, state_2, live_2, window_2, ...}
  state_i:  the state hash as {field, value, ...}
  live_i:   trial leases whose deadline is after now
  window_i: the bucket hash as {field, value, ...} (empty unless asked for)
]]

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local after_now = '(' .. string.format('%.0f', now)
local out = {string.format('%.0f', now)}
for i = 1, #KEYS / 3 do
  out[#out + 1] = redis.call('HGETALL', KEYS[3 * i - 2])
  out[#out + 1] = redis.call('ZCOUNT', KEYS[3 * i - 1], after_now, '+inf')
  if string.byte(ARGV[2], i) == 49 then  -- "1"
    out[#out + 1] = redis.call('HGETALL', KEYS[3 * i])
  else
    out[#out + 1] = {}
  end
end
return out

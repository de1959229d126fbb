--[[ breaker_read.lua: a consistent, read-only snapshot of one breaker, with the server's time.

Why a script and not a pipeline of HGETALL/ZRANGE/TIME: the snapshot is atomic (no transition
can land between the reads), "now" comes from the node that holds the keys (one clock, as in
breaker.lua), and it runs on Redis Cluster, where a pipelined TIME has no key to route by.
It writes nothing.

KEYS[1]  hash   the breaker's state (see breaker.lua)
KEYS[2]  zset   trial leases
KEYS[3]  hash   time-window buckets (ignored unless ARGV[2] == "1")
ARGV[1]  now in microseconds, or "" to use Redis TIME
ARGV[2]  "1" to include the time-window buckets

Returns {now_us, {state hash as field, value, ...}, live_trials, {window field, value, ...}}
  live_trials: trial leases whose deadline is after now
]]

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local state = redis.call('HGETALL', KEYS[1])
local live = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%.0f', now), '+inf')
local window = {}
if ARGV[2] == '1' then window = redis.call('HGETALL', KEYS[3]) end
return {string.format('%.0f', now), state, live, window}

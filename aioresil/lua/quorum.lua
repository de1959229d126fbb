-- quorum: the reports behind a quorum breaker, and the one decision to open the fleet circuit.
--
-- KEYS[1]  ZSET instance id -> report expiry (ms): the instances whose own (local) circuit
--          opened recently; key "<prefix>:{cb:<name>}:quorum" (the breaker's hash tag)
-- KEYS[2]  HASH of the quorum's history: "trips" (count), "hold" (ms until which no new trip
--          is announced), "at" (ms of the last trip), "who" (its instances, "\n"-joined)
-- ARGV[1]  "report" (this instance is sick), "clear" (it recovered) or "read"
-- ARGV[2]  now in ms, or "" to use Redis TIME (one time base for every instance)
-- ARGV[3]  this instance's id (host:pid:random)
-- ARGV[4]  report TTL in ms: a report older than this no longer counts (dead instances age out)
-- ARGV[5]  quorum K: distinct live reporters needed to open the fleet circuit
--
-- Returns {tripped (0|1), trips so far, ms since the last trip (-1: none), its instances
-- ("\n"-joined), instance_1, ms_left_1, instance_2, ms_left_2, ...} with the live reporters
-- in expiry order. tripped is 1 for exactly one "report" call: the one
-- that brought the live reporters to K, and only if no trip was announced within the last TTL
-- (so K processes reporting at once still open the fleet circuit once).
--
-- Why a script of its own instead of a change to breaker.lua: the fleet circuit stays an
-- ordinary shared breaker (half-open trials, backoff, events, dashboard) that this gate alone
-- tells to open; the gate's keys share the breaker's hash tag, so both live in one slot.
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local reports, meta = KEYS[1], KEYS[2]
local op, instance = ARGV[1], ARGV[3]
local now = now_ms(ARGV[2])
local ttl = tonumber(ARGV[4])
local quorum = tonumber(ARGV[5])

redis.call('ZREMRANGEBYSCORE', reports, '-inf', now)
local tripped = 0
if op == 'report' then
  redis.call('ZADD', reports, now + ttl, instance)
  -- Expiry only collects the set once every report is stale (scores decide liveness).
  redis.call('PEXPIRE', reports, math.ceil(ttl) + 60000)
  local live = redis.call('ZCARD', reports)
  local hold = tonumber(redis.call('HGET', meta, 'hold') or '0')
  if live >= quorum and now >= hold then
    tripped = 1
    local who = redis.call('ZRANGE', reports, 0, -1)
    redis.call('HINCRBY', meta, 'trips', 1)
    redis.call('HSET', meta, 'hold', now + ttl, 'at', now, 'who', table.concat(who, '\n'))
  end
elseif op == 'clear' then
  redis.call('ZREM', reports, instance)
end
local history = redis.call('HMGET', meta, 'trips', 'at', 'who')
local ago = -1
if history[2] then
  ago = math.floor(now - tonumber(history[2]))
end
local reply = {tripped, tonumber(history[1] or '0'), ago, history[3] or ''}
local live = redis.call('ZRANGE', reports, 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  table.insert(reply, live[i])
  table.insert(reply, math.floor(tonumber(live[i + 1]) - now))
end
return reply

-- quorum: the reports behind a quorum breaker, and the one decision to open the fleet circuit.
--
-- KEYS[1]  ZSET instance id -> report expiry (ms): the instances whose own (local) circuit
--          opened recently; key "<prefix>:{cb:<name>}:quorum" (the breaker's hash tag)
-- KEYS[2]  HASH of the quorum's history: "trips" (count), "hold" (ms until which no new trip
--          is announced), "at" (ms of the last trip), "who" (its instances, "\n"-joined),
--          "pending" (the instance whose trip is not confirmed yet), "pat"/"pwho" (the "at"
--          and "who" before that trip, put back if it is released)
-- ARGV[1]  "report" (this instance is sick), "clear" (it recovered), "read",
--          "confirm" (this instance's trip opened the fleet circuit) or "release" (it did not)
-- ARGV[2]  now in ms, or "" to use Redis TIME (one time base for every instance)
-- ARGV[3]  this instance's id (host:pid:random)
-- ARGV[4]  report TTL in ms: a report older than this no longer counts (dead instances age out)
-- ARGV[5]  quorum K: distinct live reporters needed to open the fleet circuit
-- ARGV[6]  optional: ms an unconfirmed trip holds off the next one (default: the TTL)
--
-- Returns {flag, trips so far, ms since the last trip (-1: none), its instances
-- ("\n"-joined), instance_1, ms_left_1, instance_2, ms_left_2, ...} with the live reporters
-- in expiry order. For "report", flag is 1 ("trip": open the fleet circuit) for exactly one
-- call: the one that brought the live reporters to K, and only if no trip is held (so K
-- processes reporting at once still open the fleet circuit once). For "confirm" and "release"
-- it is 1 when this instance's trip was still pending (and is now confirmed or undone).
--
-- Why a trip is pending until confirmed: opening the fleet circuit is the caller's next round
-- trips, which can fail (Redis unreachable, the fleet circuit half-open with its trial slots
-- taken, the process dying). A confirmed trip holds off the next one for the TTL, as before;
-- a released one holds nothing and is not counted (the next report with K live reporters
-- trips again); one never confirmed nor released (a dead caller) holds for ARGV[6] only.
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
local limit = ttl
if ARGV[6] and ARGV[6] ~= '' then
  limit = tonumber(ARGV[6])
end

redis.call('ZREMRANGEBYSCORE', reports, '-inf', now)
local flag = 0
if op == 'report' then
  redis.call('ZADD', reports, now + ttl, instance)
  -- Expiry only collects the set once every report is stale (scores decide liveness).
  redis.call('PEXPIRE', reports, math.ceil(ttl) + 60000)
  local live = redis.call('ZCARD', reports)
  local hold = tonumber(redis.call('HGET', meta, 'hold') or '0')
  if live >= quorum and now >= hold then
    flag = 1
    local who = redis.call('ZRANGE', reports, 0, -1)
    local before = redis.call('HMGET', meta, 'at', 'who')
    redis.call('HINCRBY', meta, 'trips', 1)
    redis.call('HSET', meta, 'hold', now + limit, 'at', now, 'who', table.concat(who, '\n'),
      'pending', instance, 'pat', before[1] or '', 'pwho', before[2] or '')
  end
elseif op == 'clear' then
  redis.call('ZREM', reports, instance)
elseif op == 'confirm' or op == 'release' then
  local m = redis.call('HMGET', meta, 'pending', 'at', 'pat', 'pwho')
  if m[1] == instance then
    flag = 1
    if op == 'confirm' then
      redis.call('HSET', meta, 'hold', tonumber(m[2]) + ttl)
    else
      redis.call('HINCRBY', meta, 'trips', -1)
      redis.call('HSET', meta, 'hold', 0)
      if m[3] == '' then
        redis.call('HDEL', meta, 'at', 'who')
      else
        redis.call('HSET', meta, 'at', m[3], 'who', m[4])
      end
    end
    redis.call('HDEL', meta, 'pending', 'pat', 'pwho')
  end
end
local history = redis.call('HMGET', meta, 'trips', 'at', 'who')
local ago = -1
if history[2] then
  ago = math.floor(now - tonumber(history[2]))
end
local reply = {flag, tonumber(history[1] or '0'), ago, history[3] or ''}
local live = redis.call('ZRANGE', reports, 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  table.insert(reply, live[i])
  table.insert(reply, math.floor(tonumber(live[i + 1]) - now))
end
return reply

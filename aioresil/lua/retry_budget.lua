-- retry_budget: deposit successful calls and/or ask for one retry, fleet-wide, in one step.
--
-- KEYS[1]  HASH of the budget's window buckets: "s<i>" = successes and "r<i>" = retries
--          granted in bucket i (i = floor(now_ms / width_ms)); key "<prefix>:{rb:<name>}:w"
-- ARGV[1]  now in ms, or "" to use Redis TIME (the one time base every process shares)
-- ARGV[2]  bucket width in ms (window / buckets)
-- ARGV[3]  buckets in the window
-- ARGV[4]  ratio: retries allowed per success in the window (0.1 = 10 %)
-- ARGV[5]  min_retries: retries allowed per window even with no success (a floor, so a
--          quiet or fully down service can still probe)
-- ARGV[6]  successes to deposit now (a process batches them between calls)
-- ARGV[7]  "1" to ask for one retry, "0" only to deposit and read
--
-- Returns {granted (0|1), successes in the window, retries granted in the window}, both
-- counts after this call's changes.
--
-- Why one script: "count the window, compare, take one" across many processes is exactly
-- the read-decide-write that races when split; here no two processes can both take the
-- last retry. Why buckets: the window slides in steps of width_ms with a fixed number of
-- fields, and the key expires on its own when the fleet goes quiet.
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local key = KEYS[1]
local width = tonumber(ARGV[2])
local buckets = tonumber(ARGV[3])
local ratio = tonumber(ARGV[4])
local floor_retries = tonumber(ARGV[5])
local deposit = tonumber(ARGV[6])
local current = math.floor(now_ms(ARGV[1]) / width)

local successes, retries = 0, 0
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do
  local field = flat[i]
  local bucket = tonumber(string.sub(field, 2))
  if bucket <= current - buckets then
    redis.call('HDEL', key, field)
  elseif string.sub(field, 1, 1) == 's' then
    successes = successes + tonumber(flat[i + 1])
  else
    retries = retries + tonumber(flat[i + 1])
  end
end
if deposit > 0 then
  redis.call('HINCRBY', key, 's' .. current, deposit)
  successes = successes + deposit
end
local granted = 0
if ARGV[7] == '1' and retries + 1 <= ratio * successes + floor_retries then
  redis.call('HINCRBY', key, 'r' .. current, 1)
  retries = retries + 1
  granted = 1
end
-- Expiry only collects a budget nobody uses (buckets are pruned by time above); a minute at
-- least, so it never decides anything the window rule does not.
redis.call('PEXPIRE', key, math.max(math.ceil(width * buckets * 2), 60000))
return {granted, successes, retries}

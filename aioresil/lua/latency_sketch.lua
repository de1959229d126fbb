-- latency_sketch: add this process's latency counts to the fleet's sketch and read it back.
--
-- KEYS[1]  HASH "<epoch>:<bucket>" -> count; key "<prefix>:{lat:<name>}:sketch". Bucket i holds
--          latencies in (2^((i-1)/4), 2^(i/4)] ms (bucket 0: <= 1 ms), so the sketch is a fixed
--          set of at most 96 buckets per epoch whatever the traffic.
-- ARGV[1]  now in ms, or "" to use Redis TIME (the one clock every process shares)
-- ARGV[2]  epoch length in ms (window / epochs)
-- ARGV[3]  epochs kept (the window): counts of older epochs are deleted
-- ARGV[4]  the counts to add to the current epoch, "bucket:count,bucket:count" ("" for none)
--
-- Returns the merged counts of the live epochs, {bucket, count, bucket, count, ...} in
-- bucket order.
--
-- Why one script: adding and reading in one step costs one round trip per sync and every
-- process reads the same merged sketch. Why epochs: a shift of the upstream's latency leaves
-- the sketch within one window, instead of being averaged with its whole history.
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local key = KEYS[1]
local width = tonumber(ARGV[2])
local epochs = tonumber(ARGV[3])
local current = math.floor(now_ms(ARGV[1]) / width)

for pair in string.gmatch(ARGV[4], '[^,]+') do
  local sep = string.find(pair, ':', 1, true)
  local bucket = tonumber(string.sub(pair, 1, sep - 1))
  local count = tonumber(string.sub(pair, sep + 1))
  redis.call('HINCRBY', key, current .. ':' .. bucket, count)
end

local merged = {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do
  local field = flat[i]
  local sep = string.find(field, ':', 1, true)
  local epoch = tonumber(string.sub(field, 1, sep - 1))
  if epoch <= current - epochs then
    redis.call('HDEL', key, field)
  else
    local bucket = tonumber(string.sub(field, sep + 1))
    merged[bucket] = (merged[bucket] or 0) + tonumber(flat[i + 1])
  end
end
-- Expiry only collects a sketch nobody uses (epochs are pruned by time above).
redis.call('PEXPIRE', key, math.max(math.ceil(width * (epochs + 1)), 60000))
local reply = {}
for bucket = 0, 95 do
  if merged[bucket] then
    table.insert(reply, bucket)
    table.insert(reply, merged[bucket])
  end
end
return reply

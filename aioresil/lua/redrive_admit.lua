-- redrive_admit: schedule dead letters the redrive worker has not seen yet.
--
-- KEYS[1]  base.."rd:due"     ZSET id -> when its next redrive is due (ms, lease time base)
-- KEYS[2]  base.."rd:parked"  ZSET id -> when it was parked (ms): out of the schedule for good
-- KEYS[3]  base.."lease"      the queue's lease ZSET (shared with dlq_claim)
-- KEYS[4..] base.."e:"..id    the entries, one key per ARGV pair below
--   (base = "<prefix>:{dlq:<queue>}:": every key shares the queue's one hash tag)
-- ARGV[1]  now in ms, or "" to use Redis TIME (the queue's lease time base)
-- ARGV[2k], ARGV[2k+1]  (k = 1..): entry id, ms from now until its first redrive is due
--
-- Returns the number of entries newly scheduled.
--
-- Why "from now": the delay is measured from the failure on the pusher's wall clock, which
-- the caller turns into a remaining wait; adding it to the script's own now keeps every due
-- time in the one time base the workers compare against. ZADD NX: an entry already scheduled
-- (or claimed) keeps its due time, so two workers admitting the same page change nothing.
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local now = now_ms(ARGV[1])
local admitted = 0
for k = 4, #KEYS do
  local id = ARGV[2 * (k - 3)]
  local wait = tonumber(ARGV[2 * (k - 3) + 1])
  if redis.call('EXISTS', KEYS[k]) == 1 and not redis.call('ZSCORE', KEYS[2], id) then
    local due = now + wait
    local held = redis.call('ZSCORE', KEYS[3], id)
    if held and tonumber(held) > due then
      due = tonumber(held) -- someone retries it by hand right now: after their lease
    end
    admitted = admitted + redis.call('ZADD', KEYS[1], 'NX', due, id)
  end
end
return admitted

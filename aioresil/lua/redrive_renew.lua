-- redrive_renew: extend a redrive worker's lease while its handler is still running.
--
-- KEYS[1]  base.."tok"  HASH id -> fencing token    KEYS[2]  base.."lease" (the queue's)
-- KEYS[3]  base.."rd:due"  ZSET id -> due ms
--   (base = "<prefix>:{dlq:<queue>}:": every key shares the queue's one hash tag)
-- ARGV[1]  entry id     ARGV[2]  fencing token from redrive_claim
-- ARGV[3]  now in ms or "" (Redis TIME)     ARGV[4]  lease in ms
--
-- Returns the new lease deadline in ms, or 0 when the token no longer matches (the entry was
-- settled, removed, or claimed by another worker or a manual "dlq retry"): the lease is lost
-- and the caller must stop its handler.
--
-- Why the token is enough: every claim (redrive_claim, dlq_claim) replaces the token, so a
-- matching token means no one else has claimed the entry since, even if our deadline passed
-- a moment ago; extending it then keeps "one runner at a time" true. The due time moves with
-- the deadline, as in redrive_claim, so a worker killed after a renewal still loses nothing.
local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local id = ARGV[1]
if redis.call('HGET', KEYS[1], id) ~= ARGV[2] then
  return 0
end
local deadline = now_ms(ARGV[3]) + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], deadline, id)
redis.call('ZADD', KEYS[3], deadline, id)
return deadline

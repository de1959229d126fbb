-- dlq_lib: helpers shared by every dlq_* script. Not run on its own: aioresil/stores/dlq_redis.py
-- prepends this file to each dlq_* script before computing its SHA.
--
-- Key layout. Every key of one queue shares ONE hash tag, base = "<prefix>:{dlq:<name>}:", so a
-- whole queue lives in one Redis Cluster slot and every script is slot-local (the trade-off: one
-- queue cannot be spread over several shards; use several queue names for that). Scripts build
-- per-entry key names from ARGV[1] = base; KEYS[1] always names a key under the same tag, so the
-- script is routed to the right slot.
--   base.."idx"       ZSET, every score 0, member "<failed_ms:13 digits>|<id>": lexicographic
--                     order is time order, and a member is an exact pagination cursor
--   base.."t:"..tk    the same index for one task type (tk = the encoded type name)
--   base.."counts"    HASH task_type -> number of entries of that type
--   base.."e:"..id    HASH, one entry (fields: ty tk fa ff ti p et em tb a md)
--   base.."lease"     ZSET id -> lease deadline (ms); an entry whose deadline passed is free
--   base.."tok"       HASH id -> fencing token of the entry's latest lease
--   base.."seq"       STRING, last fencing token handed out (INCR)
--   base.."evicted", base.."expired"   STRING counters (overflow evictions, retention drops)

-- The time base of lease decisions: the caller's injected clock (tests) or Redis TIME.
local function dlq_now(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Delete one entry with every index that names it; false when it does not exist.
local function dlq_remove(base, id)
  local ek = base .. 'e:' .. id
  local v = redis.call('HMGET', ek, 'ty', 'tk', 'fa')
  if not v[1] then
    return false
  end
  local member = v[3] .. '|' .. id
  redis.call('ZREM', base .. 'idx', member)
  redis.call('ZREM', base .. 't:' .. v[2], member)
  if redis.call('HINCRBY', base .. 'counts', v[1], -1) <= 0 then
    redis.call('HDEL', base .. 'counts', v[1])
  end
  redis.call('DEL', ek)
  redis.call('ZREM', base .. 'lease', id)
  redis.call('HDEL', base .. 'tok', id)
  return true
end

-- The id inside an index member "<13 digits>|<id>".
local function dlq_member_id(member)
  return string.sub(member, 15)
end

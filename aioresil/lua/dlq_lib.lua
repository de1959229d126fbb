-- dlq_lib: helpers shared by every dlq_* script. Not run on its own: aioresil/stores/dlq_redis.py
-- prepends this file to each dlq_* script before computing its SHA.
--
-- Key layout. Every key of one queue shares ONE hash tag, base = "<prefix>:{dlq:<name>}:", so a
-- whole queue lives in one Redis Cluster slot and every script is slot-local (the trade-off: one
-- queue cannot be spread over several shards; use several queue names for that).
--
-- KEYS[1..7], the same in every dlq_* script: the queue's own keys.
--   KEYS[1] base.."idx"      ZSET, every score 0, member "<failed_ms:13 digits>|<id>":
--                            lexicographic order is time order, and a member is an exact cursor
--   KEYS[2] base.."counts"   HASH task_type -> number of entries of that type
--   KEYS[3] base.."lease"    ZSET id -> lease deadline (ms); an entry whose deadline passed is free
--   KEYS[4] base.."tok"      HASH id -> fencing token of the entry's latest lease
--   KEYS[5] base.."seq"      STRING, last fencing token handed out (INCR)
--   KEYS[6] base.."evicted"  STRING counter (overflow evictions)
--   KEYS[7] base.."expired"  STRING counter (retention drops)
-- KEYS[8..]: the keys the caller knows the script touches (the entry it names, the type index
-- it reads or writes); each script's header lists them. The per-entry keys are
--   base.."e:"..id    HASH, one entry (fields: ty tk fa ff ti p et em tb a md)
--   base.."t:"..tk    the KEYS[1] index for one task type (tk = the encoded type name)
-- Keys of entries a script only finds inside an index (evictions, retention drops, purge, the
-- entries of a listed page, another entry's type index) cannot be named by the caller without a
-- second round trip: they are built from KEYS[1]'s own name (the same hash tag, so the same
-- slot), never from ARGV, as checkpoint_list.lua does for its data keys.
local Q_IDX, Q_COUNTS, Q_LEASE, Q_TOK = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local Q_SEQ, Q_EVICTED, Q_EXPIRED = KEYS[5], KEYS[6], KEYS[7]
local Q_BASE = string.sub(Q_IDX, 1, #Q_IDX - 3)  -- "<prefix>:{dlq:<name>}:" ("idx" cut off)

local function dlq_entry_key(id)
  return Q_BASE .. 'e:' .. id
end

local function dlq_type_key(tk)
  return Q_BASE .. 't:' .. tk
end

-- The time base of lease decisions: the caller's injected clock (tests) or Redis TIME.
local function dlq_now(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Delete one entry with every index that names it; false when it does not exist.
local function dlq_remove(id)
  local ek = dlq_entry_key(id)
  local v = redis.call('HMGET', ek, 'ty', 'tk', 'fa')
  if not v[1] then
    return false
  end
  local member = v[3] .. '|' .. id
  redis.call('ZREM', Q_IDX, member)
  redis.call('ZREM', dlq_type_key(v[2]), member)
  if redis.call('HINCRBY', Q_COUNTS, v[1], -1) <= 0 then
    redis.call('HDEL', Q_COUNTS, v[1])
  end
  redis.call('DEL', ek)
  redis.call('ZREM', Q_LEASE, id)
  redis.call('HDEL', Q_TOK, id)
  return true
end

-- The id inside an index member "<13 digits>|<id>".
local function dlq_member_id(member)
  return string.sub(member, 15)
end

-- Store one entry with both indexes and its type's counter, after retention and the cap: the
-- body of dlq_push.lua (one entry) and dlq_push_many.lua (a chunk of them). ek and tkey come
-- from the caller's KEYS (the entry's hash and its type index); fields are the entry's other
-- field/value pairs, after ty, tk and fa.
--
-- Returns {1, evicted_id...} when stored, {0} when the queue is full and overflow is "reject"
-- (nothing stored), {2} when an entry with this id already exists (a spool replay of a push
-- whose reply was lost: pushing is idempotent by id).
local function dlq_store(id, ek, tkey, ty, tk, fa, max_entries, overflow, retention, fields)
  if redis.call('EXISTS', ek) == 1 then
    -- Rewrite one field with its own value: a write of this script's own, so a WAIT after it
    -- (replicated acknowledgement) also covers the earlier push that stored the entry.
    redis.call('HSET', ek, 'fa', redis.call('HGET', ek, 'fa'))
    return {2}
  end
  -- Retention, bounded work per push (the rest goes on the next pushes or purge()).
  if retention ~= '' then
    local old = redis.call('ZRANGEBYLEX', Q_IDX, '-', retention, 'LIMIT', 0, 100)
    for _, member in ipairs(old) do
      if dlq_remove(dlq_member_id(member)) then
        redis.call('INCR', Q_EXPIRED)
      end
    end
  end
  local reply = {1}
  local size = redis.call('ZCARD', Q_IDX)
  if size >= max_entries then
    if overflow ~= 'evict_oldest' then
      return {0}
    end
    while size >= max_entries do
      local oldest = redis.call('ZRANGE', Q_IDX, 0, 0)[1]
      local victim = dlq_member_id(oldest)
      dlq_remove(victim)
      redis.call('INCR', Q_EVICTED)
      table.insert(reply, victim)
      size = size - 1
    end
  end
  local member = fa .. '|' .. id
  local hash = {'ty', ty, 'tk', tk, 'fa', fa}
  for _, v in ipairs(fields) do
    table.insert(hash, v)
  end
  redis.call('HSET', ek, unpack(hash))
  redis.call('ZADD', Q_IDX, 0, member)
  redis.call('ZADD', tkey, 0, member)
  redis.call('HINCRBY', Q_COUNTS, ty, 1)
  return reply
end

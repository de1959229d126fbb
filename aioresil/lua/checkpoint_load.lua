--[[
checkpoint_load: read one checkpoint.

KEYS[1]  the task's record hash (<prefix>:{ckpt:<namespace>}:d:<task>)
KEYS[2]  the task's state string (<prefix>:{ckpt:<namespace>}:b:<task>); records written
         before the state got its own key hold it in the hash's field d instead

Returns  {}                                        no checkpoint
         {1, state, version, updated_at_ms, steps}  steps is nil when never written
         {-1, reason}                               the stored record is unreadable

Why a script for a read: the type check and the read are one round trip, and a key of the
wrong type becomes a clear "corrupt" answer instead of a WRONGTYPE error.
]]
local kind = redis.call('TYPE', KEYS[1])
kind = kind['ok'] or kind
if kind == 'none' then
  return {}
end
if kind ~= 'hash' then
  return {-1, 'the key holds a ' .. kind .. ', not a hash'}
end
local fields = redis.call('HMGET', KEYS[1], 'd', 'v', 't', 's')
if not fields[1] then
  fields[1] = redis.call('GET', KEYS[2])
end
if not fields[1] or not fields[2] or not fields[3] then
  return {-1, 'fields d, v or t are missing'}
end
return {1, fields[1], fields[2], fields[3], fields[4]}

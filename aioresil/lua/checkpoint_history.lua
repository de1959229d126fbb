--[[
checkpoint_history: the kept versions of one checkpoint, newest first.

KEYS[1]  the task's history list (<prefix>:{ckpt:<namespace>}:h:<task>)

Returns  {1, entry, entry, ...}   each entry "<version> <updated_at_ms> <state>"
         {-1, reason}             the key is not a list

Why a script for a read: the type check and the read are one round trip.
]]
local kind = redis.call('TYPE', KEYS[1])
kind = kind['ok'] or kind
if kind == 'none' then
  return {1}
end
if kind ~= 'list' then
  return {-1, 'the history key holds a ' .. kind .. ', not a list'}
end
local out = {1}
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = entry
end
return out

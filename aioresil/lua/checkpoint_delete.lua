--[[
checkpoint_delete: delete one checkpoint, its history and its index entry.

KEYS[1]  the task's record hash   KEYS[2]  the task's history list   KEYS[3]  the namespace index
KEYS[4]  the task's state string
ARGV[1]  expected version: "" = delete unconditionally, n = only if the stored version is n
ARGV[2]  the encoded task id (index member)

Returns  {1, deleted_version}    deleted (0 when there was nothing to delete)
         {0, current_version}    conflict: nothing deleted

Why one script: "delete only if nobody saved since I looked" needs the check and the delete
together. An unconditional delete removes even an unreadable record, which is how an operator
gets out of a corrupt checkpoint.
]]
local current = 0
local kind = redis.call('TYPE', KEYS[1])
kind = kind['ok'] or kind
if kind == 'hash' then
  current = tonumber(redis.call('HGET', KEYS[1], 'v')) or -1
elseif kind ~= 'none' then
  current = -1
end
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then
  return {0, current}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[2])
return {1, current}

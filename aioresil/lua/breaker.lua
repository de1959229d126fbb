--[[ breaker.lua: every state change of one shared circuit breaker, atomically.

This file is the Redis twin of aioresil/core/machine.py: the same rules, the same field names
where possible, applied inside one script so no process ever decides on a stale copy. The
model-based test (tests/core/test_model_lua.py) drives both with the same random sequences and
asserts they agree step for step. Change one, change the other.

KEYS[1]  hash   the breaker's state (fields below)
KEYS[2]  zset   HALF_OPEN trial permits: member = token, score = lease deadline (us)
KEYS[3]  window count-based: a string ring, one byte per call ('0'..'3' = failed + 2*slow)
                time-based: a hash bucket index -> "calls failures slow"
ARGV[1]  op: "acquire" | "record" | "batch" | "operator"
ARGV[2]  now in microseconds, or "" to use Redis TIME (the fleet's one clock; see why below)
ARGV[3]  the handle's constant part, 15 comma-separated items (empty = None): the config
         (failure_threshold, failure_rate_threshold, window_size, window_duration_us,
         minimum_calls, slow_call_us, slow_call_rate_threshold, recovery_us,
         backoff_multiplier, max_recovery_us, half_open_max_calls, success_threshold,
         trial_lease_us), the pub/sub channel for transitions ("" = do not publish) and the
         breaker's encoded name (for the published message). One argument, encoded once by
         the client: redis-py packs every argument in Python, which cost more than parsing
         this string here. Sent with every call, so the caller's config is applied.
ARGV[4]  rejections counted locally since the last call (added to the counter)
op "record":   ARGV[5] generation, ARGV[6] token (0 = normal), ARGV[7] outcome
               (0 success, 1 failure, 2 ignored, 3 cancelled), ARGV[8] duration (us)
op "batch":    ARGV[5] generation, ARGV[6] outcomes as a string of digits "0"-"2", one per
               call, in the order they ended, ARGV[7] durations "us,us,..." or "" (all 0)
op "operator": ARGV[5] "reset" | "force_open" | "disable"

Returns {code, state, generation, retry_after_us, token, old_state, trigger, corrupt}
  code: 1 permit / 0 rejected (acquire); 1 otherwise
  retry_after_us: microseconds until trial calls when OPEN, else -1
  token: trial token granted by acquire (0 = normal permit)
  old_state, trigger: the last transition this call caused, or "" ""
  corrupt: 1 if the stored state was unreadable and was reset (documented policy)

Why Redis TIME: shared state needs one time base. Client clocks drift and jump; TIME is read
inside the script, so every process agrees on when the recovery timeout has elapsed. Only
durations (retry_after) leave the script, so each client's local view is skew-free too.
Scripts that call TIME are safe because Redis 7 replicates scripts by their effects.
]]

local H, TRIALS, WIN = KEYS[1], KEYS[2], KEYS[3]
local SCHEMA = '1'
local BUCKETS = 10

local function num(s) if s == nil or s == '' or s == false then return nil end return tonumber(s) end
local function fmt(x) return string.format('%.0f', x) end

-- ------------------------------------------------------------------ time and config
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local fixed = {}
for item in string.gmatch(ARGV[3] .. ',', '([^,]*),') do fixed[#fixed + 1] = item end
local FT, FRT, WSIZE, WDUR, MINC = num(fixed[1]), num(fixed[2]), num(fixed[3]), num(fixed[4]),
  num(fixed[5])
local SLOW, SRT, REC, MULT, MAXREC = num(fixed[6]), num(fixed[7]), num(fixed[8]),
  num(fixed[9]), num(fixed[10])
local HOMAX, STH, LEASE = num(fixed[11]), num(fixed[12]), num(fixed[13])
local CHANNEL, NAME = fixed[14], fixed[15]

local function recovery_timeout(reopen)
  local n = reopen - 1
  if n < 0 then n = 0 end
  local t = REC * (MULT ^ n)
  if MAXREC and t > MAXREC then t = MAXREC end
  return t
end

-- ------------------------------------------------------------------ load (or reset if corrupt)
local STATES = {closed = true, open = true, half_open = true, forced_open = true, disabled = true}
local raw = redis.call('HGETALL', H)
local r = {}
for i = 1, #raw, 2 do r[raw[i]] = raw[i + 1] end
local corrupt = 0
local fresh = (#raw == 0)

local NUMERIC = {'g', 'cf', 'ou', 'ro', 'ts', 'nt', 'ns', 'nf', 'ni', 'nr', 'nsl', 'wp', 'wc',
                 'wf', 'ws'}

local function blank(gen)
  return {v = SCHEMA, st = 'closed', g = gen, cf = 0, oa = '', ou = 0, ro = 0, ts = 0, nt = 1,
          ns = 0, nf = 0, ni = 0, nr = 0, nsl = 0, wp = 0, wc = 0, wf = 0, ws = 0}
end

local rec
if fresh then
  rec = blank(1)
else
  local ok = r.v == SCHEMA and STATES[r.st] and num(r.g)
  if not ok then
    -- Documented policy: unreadable or foreign-version state is reset to CLOSED (with a new
    -- generation, so no old permit can act on it) and reported, never crash-looped on.
    rec = blank((num(r.g) or 0) + 1)
    corrupt = 1
    redis.call('DEL', TRIALS, WIN)
  else
    rec = {v = SCHEMA, st = r.st, g = num(r.g), cf = num(r.cf) or 0, oa = r.oa or '',
           ou = num(r.ou) or 0, ro = num(r.ro) or 0, ts = num(r.ts) or 0, nt = num(r.nt) or 1,
           ns = num(r.ns) or 0, nf = num(r.nf) or 0, ni = num(r.ni) or 0, nr = num(r.nr) or 0,
           nsl = num(r.nsl) or 0, wp = num(r.wp) or 0, wc = num(r.wc) or 0,
           wf = num(r.wf) or 0, ws = num(r.ws) or 0}
  end
end
rec.nr = rec.nr + (num(ARGV[4]) or 0)

local last_old, last_trigger = '', ''

-- ------------------------------------------------------------------ window
local function window_clear()
  redis.call('DEL', WIN)
  rec.wp, rec.wc, rec.wf, rec.ws = 0, 0, 0, 0
end

local function time_expire()
  local width = WDUR / BUCKETS
  local oldest_kept = math.floor(now / width) - BUCKETS + 1
  local fields = redis.call('HKEYS', WIN)
  for _, f in ipairs(fields) do
    if tonumber(f) < oldest_kept then
      local v = redis.call('HGET', WIN, f)
      local c, fl, s = string.match(v, '(%d+) (%d+) (%d+)')
      rec.wc = rec.wc - tonumber(c)
      rec.wf = rec.wf - tonumber(fl)
      rec.ws = rec.ws - tonumber(s)
      redis.call('HDEL', WIN, f)
    end
  end
end

local function window_add(failed, slow)
  local fv, sv = failed and 1 or 0, slow and 1 or 0
  if WSIZE then
    local pos = rec.wp
    local old = redis.call('GETRANGE', WIN, pos, pos)
    if old ~= '' and old ~= '-' then
      local o = tonumber(old)
      rec.wc = rec.wc - 1
      rec.wf = rec.wf - (o % 2)
      rec.ws = rec.ws - math.floor(o / 2)
    end
    redis.call('SETRANGE', WIN, pos, tostring(fv + 2 * sv))
    pos = pos + 1
    if pos == WSIZE then pos = 0 end
    rec.wp = pos
  else
    time_expire()
    local idx = math.floor(now / (WDUR / BUCKETS))
    -- a bucket older than the newest is never written (mirrors TimeWindow.add)
    local newest = nil
    for _, f in ipairs(redis.call('HKEYS', WIN)) do
      local n = tonumber(f)
      if newest == nil or n > newest then newest = n end
    end
    if newest ~= nil and newest > idx then idx = newest end
    local v = redis.call('HGET', WIN, tostring(idx))
    local c, fl, s = 0, 0, 0
    if v then
      local a, b, d = string.match(v, '(%d+) (%d+) (%d+)')
      c, fl, s = tonumber(a), tonumber(b), tonumber(d)
    end
    redis.call('HSET', WIN, tostring(idx), fmt(c + 1) .. ' ' .. fmt(fl + fv) .. ' ' .. fmt(s + sv))
  end
  rec.wc = rec.wc + 1
  rec.wf = rec.wf + fv
  rec.ws = rec.ws + sv
end

local function rate_rule_fires()
  if rec.wc < MINC then return false end
  if FRT and rec.wf / rec.wc >= FRT then return true end
  return SRT ~= nil and rec.ws / rec.wc >= SRT
end

local has_window = (WSIZE ~= nil) or (WDUR ~= nil)

-- ------------------------------------------------------------------ transitions
local LEGAL = {
  ['closed>trip'] = 'open', ['open>timeout_elapsed'] = 'half_open',
  ['half_open>trial_failed'] = 'open', ['half_open>trials_passed'] = 'closed',
}

local function move(trigger)
  local new
  if trigger == 'reset' then new = 'closed'
  elseif trigger == 'force_open' then new = 'forced_open'
  elseif trigger == 'disable' then new = 'disabled'
  else new = LEGAL[rec.st .. '>' .. trigger] end
  if not new then
    return redis.error_reply('AIORESIL_ILLEGAL no transition from ' .. rec.st .. ' on ' .. trigger)
  end
  last_old, last_trigger = rec.st, trigger
  rec.st = new
  rec.g = rec.g + 1
  redis.call('DEL', TRIALS)
  rec.ts = 0
  rec.cf = 0
  if has_window then window_clear() end
  return nil
end

local function open(trigger)
  local err = move(trigger)
  if err then return err end
  if trigger == 'trial_failed' then rec.ro = rec.ro + 1 else rec.ro = 1 end
  rec.oa = fmt(now)
  rec.ou = now + recovery_timeout(rec.ro)
  return nil
end

-- ------------------------------------------------------------------ operations
local function acquire()
  local st = rec.st
  if st == 'closed' or st == 'disabled' then return 1, 0 end
  if st == 'open' then
    if now < rec.ou then
      rec.nr = rec.nr + 1
      return 0, 0
    end
    local err = move('timeout_elapsed')
    if err then return err end
    st = rec.st
  end
  if st == 'half_open' then
    redis.call('ZREMRANGEBYSCORE', TRIALS, '-inf', fmt(now))
    if redis.call('ZCARD', TRIALS) < HOMAX then
      local token = rec.nt
      rec.nt = rec.nt + 1
      redis.call('ZADD', TRIALS, fmt(now + LEASE), fmt(token))
      return 1, token
    end
    rec.nr = rec.nr + 1
    return 0, 0
  end
  rec.nr = rec.nr + 1
  return 0, 0
end

local function record(gen, token, outcome, duration)
  if outcome == 3 then
    if token > 0 and gen == rec.g then redis.call('ZREM', TRIALS, fmt(token)) end
    return nil
  end
  local failed = (outcome == 1)
  local slow = (SLOW ~= nil) and duration >= SLOW and outcome ~= 2
  if outcome == 0 then rec.ns = rec.ns + 1
  elseif failed then rec.nf = rec.nf + 1
  else rec.ni = rec.ni + 1 end
  if slow then rec.nsl = rec.nsl + 1 end

  if gen ~= rec.g then return nil end
  if token > 0 then
    if redis.call('ZREM', TRIALS, fmt(token)) == 0 then return nil end
    if outcome == 2 then return nil end
    if failed then return open('trial_failed') end
    rec.ts = rec.ts + 1
    if rec.ts >= STH then
      rec.ro = 0
      rec.oa = ''
      return move('trials_passed')
    end
    return nil
  end
  if rec.st ~= 'closed' or outcome == 2 then return nil end
  if failed then rec.cf = rec.cf + 1 else rec.cf = 0 end
  if has_window then window_add(failed, slow) end
  if not (failed or slow) then return nil end
  if (FT ~= nil and rec.cf >= FT) or (has_window and rate_rule_fires()) then
    return open('trip')
  end
  return nil
end

local op = ARGV[1]
local code, token = 1, 0
if op == 'acquire' then
  local a, b = acquire()
  if type(a) == 'table' then return a end
  code, token = a, b
elseif op == 'record' then
  local err = record(tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
    tonumber(ARGV[8]))
  if err then return err end
elseif op == 'batch' then
  local gen = tonumber(ARGV[5])
  local outcomes = ARGV[6]
  local durations = {}
  if ARGV[7] ~= '' then
    for d in string.gmatch(ARGV[7], '([^,]+)') do durations[#durations + 1] = tonumber(d) end
  end
  for i = 1, #outcomes do
    local err = record(gen, 0, tonumber(string.sub(outcomes, i, i)), durations[i] or 0)
    if err then return err end
  end
elseif op == 'operator' then
  local trigger = ARGV[5]
  if trigger ~= 'reset' and trigger ~= 'force_open' and trigger ~= 'disable' then
    return redis.error_reply('AIORESIL_BADOP not an operator action: ' .. tostring(trigger))
  end
  local err = move(trigger)
  if err then return err end
  rec.ro = 0
  rec.ou = 0
  if trigger == 'force_open' then rec.oa = fmt(now) else rec.oa = '' end
  if trigger == 'reset' then rec.ns, rec.nf, rec.ni, rec.nr, rec.nsl = 0, 0, 0, 0, 0 end
else
  return redis.error_reply('AIORESIL_BADOP unknown op ' .. tostring(op))
end

-- ------------------------------------------------------------------ save and answer
-- Write only the fields that changed: a success in CLOSED touches two of them, and HSET of
-- the whole record was most of this script's cost.
-- Numbers are compared before formatting: string.format was the other large cost.
local changed = {}
local rewrite = fresh or corrupt == 1
if rewrite or r.v ~= SCHEMA then changed[#changed + 1] = 'v'; changed[#changed + 1] = SCHEMA end
if rewrite or r.st ~= rec.st then changed[#changed + 1] = 'st'; changed[#changed + 1] = rec.st end
if rewrite or r.oa ~= rec.oa then changed[#changed + 1] = 'oa'; changed[#changed + 1] = rec.oa end
for _, field in ipairs(NUMERIC) do
  local value = rec[field]
  if rewrite or num(r[field]) ~= value then
    changed[#changed + 1] = field
    changed[#changed + 1] = fmt(value)
  end
end
if #changed > 0 then redis.call('HSET', H, unpack(changed)) end

local retry_after = -1
if rec.st == 'open' then
  retry_after = rec.ou - now
  if retry_after < 0 then retry_after = 0 end
end

if last_trigger ~= '' and CHANNEL ~= '' then
  -- "<encoded name> <state> <generation> <retry_after_us>": other processes update their view
  redis.call('PUBLISH', CHANNEL, NAME .. ' ' .. rec.st .. ' ' .. fmt(rec.g) .. ' ' .. fmt(retry_after))
end

return {code, rec.st, fmt(rec.g), fmt(retry_after), fmt(token), last_old, last_trigger, corrupt}

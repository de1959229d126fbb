--[[ breaker.lua: every state change of one shared circuit breaker, atomically.

This file is the Redis twin of aioresil/core/machine.py: the same rules over a Redis hash,
applied inside one script so no process ever decides on a stale copy. What is not a rule is
not written here: a prelude generated from the Python core (aioresil/backends/breaker_schema.py)
is prepended at load time and defines
  F            logical name -> hash field (F.state == 'st', ...); FIELD_NAMES / FIELD_KEYS
               the same pairs as two arrays, NUMERIC the logical names holding integers
  LEGAL        ['<state>><trigger>'] = new state: core/states.py's TRANSITIONS, every move
  OPERATOR     [trigger] = true for operator actions (legal from every state)
  STATES, CONFIG_ITEMS (the order of the stored config string), SCHEMA, BUCKETS,
               MAX_DURATION (core/config.py's MAX_DURATION_US: no recovery timeout is longer)
  pack_row, stored_row, IN_ROW, STATE_CODE, ROW_SIZE  the read row's packer and layout
and, above the hot path, the HOT_* field names and int64_bytes (the plain-Lua packer of one
integer, for a server without struct, which pack_row uses too).
The model-based test (tests/core/test_model_lua.py) drives this script and the Python machine with
the same random sequences and asserts they agree step for step.

KEYS[1]  hash   the breaker's state (fields in F), the config in force (F.config, F.fingerprint)
KEYS[2]  zset   HALF_OPEN trial permits: member = token, score = lease deadline (us). A negative
                score -d is a tombstone: a token given back before its grant was seen (a
                cancelled acquire); it refuses that grant until d, then expires.
KEYS[3]  window count-based: a string ring, one byte per call ('0'..'3' = failed + 2*slow)
                time-based: a hash bucket index -> "calls failures slow"
KEYS[4]  string the read row: the fields a reader needs, packed (breaker_schema.ROW_KEY and
                ROW_FORMAT; read by breaker_read.lua)
ARGV[1]  op: "success" | "acquire" | "record" | "batch" | "operator" | "release"
ARGV[2]  now in microseconds, or "" to use Redis TIME (the fleet's one clock; see why below)
ARGV[3]  the caller's config fingerprint
ARGV[4]  the caller's binding, or "": "<config items>,<pub/sub channel>,<encoded name>", sent by
         a process's first call for this breaker (and again if the script answered code -1).
         A binding whose fingerprint differs from the stored one replaces it: the newest
         process to bind wins, and every call of every process then runs under that config
         (never the caller's own), so two deploys cannot alternate rules call by call.
         When the replaced config gave the window another shape (WINDOW_ITEMS: its kind,
         size or duration), the window key and its counters are cleared: see "Why a new
         window shape restarts the window" below.
ARGV[5]  rejections counted locally since the last call (added to the counter)
op "success":  ARGV[6] generation: the success of a normal permit (the hot path, see below)
op "acquire":  ARGV[6] the client's trial token ("" = take the next counter value): chosen by
               the client so that a cancelled caller can give back a grant it never read
op "record":   ARGV[6] generation, ARGV[7] token (0 = normal), ARGV[8] outcome
               (0 success, 1 failure, 2 ignored, 3 cancelled), ARGV[9] duration (us)
op "batch":    ARGV[6] generation, ARGV[7] outcomes as a string of digits "0"-"2", one per
               call, in the order they ended, ARGV[8] durations "us,us,..." or "" (all 0)
op "operator": ARGV[6] a trigger of OPERATOR
op "release":  ARGV[6] a token whose acquire was cancelled: removed, or tombstoned

Returns 1 for a "success" applied by the hot path (nothing but the success counter changed), else
{code, state, generation, retry_after_us, token, old_state, trigger, corrupt, fp, replaced,
 window_restarted}
  code: 1 permit / 0 rejected (acquire); 1 otherwise; -1 no config stored and no binding
        given (the caller sends its binding and calls again; nothing was changed)
  retry_after_us: microseconds until trial calls when OPEN, else -1
  token: trial token granted by acquire (0 = normal permit)
  old_state, trigger: the last transition this call caused, or "" ""
  corrupt: 1 if the stored state was unreadable and was reset (documented policy)
  fp: the fingerprint of the config in force; replaced: the one this call's binding replaced
  window_restarted: 1 if this call's binding changed the window's shape and cleared it
Errors: "AIORESIL_ILLEGAL ..." (a move not in LEGAL), "AIORESIL_BADOP ..." (unknown op).

Why Redis TIME: shared state needs one time base. Client clocks drift and jump; TIME is read
inside the script, so every process agrees on when the recovery timeout has elapsed. Only
durations (retry_after) leave the script, so each client's local view is skew-free too.
Scripts that call TIME are safe because Redis 7 replicates scripts by their effects.

Why a new window shape restarts the window: KEYS[3] is a string ring for a count window and a
hash of buckets for a time window, and its counters (F.window_*) were summed under the rules
that wrote it. Under another shape it is wrong three ways: the other kind's commands fail
with WRONGTYPE (every call of the new config errors: its outcomes are lost, for good); a ring
whose size shrank below its position never wraps (it grows a byte a call and the rates cover
all history); buckets of another width sit at indexes the new width never expires. No
conversion is honest (a ring of calls has no times, a bucket no order), so the binding that
changes the shape clears the window: the rates start afresh under the new rules, as after a
transition. State, generation, totals and trial leases carry over (they mean the same under
any rules), and so does a window whose shape is unchanged (a new threshold or minimum_calls
judges the same calls). aioresil/core/machine.py's rebind() is the Python twin, and the
reply's window_restarted puts it in the process's BreakerConfigConflict event and log line.
]]

local op = ARGV[1]

-- ------------------------------------------------------------------ the hot path
-- A success of a normal permit in CLOSED, under the caller's own config, which has no window
-- (the client sends "success" only then), with no failure run to end and no local rejections
-- to add: only the success counter changes. Five fields read, one incremented, no config
-- parsed, no clock read. The read row (KEYS[4], below) holds the counter too (last of its
-- integers): its eight bytes are written in place (SETRANGE at HOT_SUCCESSES_AT), nothing
-- packed again, so a reader takes the row alone (issue 17). A success that ends a failure
-- run or carries rejections takes the full path (once per failure or per stale local
-- rejection), and so does a counter that is no integer (HINCRBY refuses it; the full path
-- reads it as 0 and writes it back).
if op == 'success' and ARGV[4] == '' and ARGV[5] == '0' then
  local H = KEYS[1]
  local v = redis.call('HMGET', H, HOT_STATE, HOT_GENERATION, HOT_FINGERPRINT,
    HOT_CONSECUTIVE_FAILURES, HOT_SCHEMA)
  if v[1] == 'closed' and v[2] == ARGV[6] and v[3] == ARGV[3] and v[4] == '0'
      and v[5] == SCHEMA then
    local count = redis.pcall('HINCRBY', H, HOT_SUCCESSES, 1)
    if type(count) == 'number' then
      local bytes  -- fakeredis has no struct: the same bytes from the plain-Lua packer
      if struct then bytes = struct.pack('<i8', count) else bytes = int64_bytes(count) end
      -- A row key lost alone (evicted, deleted by hand) would be made again from this
      -- offset, too short to be a row: the success is taken back and left to the full path,
      -- which writes the row whole (it checks that the key holds one), so a breaker that
      -- only ever succeeds gets its row back at its next call.
      -- (pcall: a key of another type, written by hand, goes to the full path too)
      if redis.pcall('SETRANGE', KEYS[4], HOT_SUCCESSES_AT, bytes) == HOT_ROW_SIZE then
        return 1
      end
      redis.call('HINCRBY', H, HOT_SUCCESSES, -1)
    end
  end
end

-- @@PRELUDE@@
local H, TRIALS, WIN, ROW = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function num(s) if s == nil or s == '' or s == false then return nil end return tonumber(s) end
local function fmt(x) return string.format('%.0f', x) end

local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- ------------------------------------------------------------------ load (or reset if corrupt)
local raw = redis.call('HMGET', H, unpack(FIELD_KEYS))
local r = {}
local fresh = true
for i, name in ipairs(FIELD_NAMES) do
  local value = raw[i]
  if value then
    r[name] = value
    if name ~= 'config' and name ~= 'fingerprint' then fresh = false end
  end
end
local corrupt = 0

local function blank(gen)
  return {schema = SCHEMA, state = 'closed', generation = gen, consecutive_failures = 0,
          opened_at = '', open_until = 0, reopen_count = 0, trial_successes = 0, next_token = 1,
          successes = 0, failures = 0, ignored = 0, rejected = 0, slow = 0, window_pos = 0,
          window_calls = 0, window_failures = 0, window_slow = 0}
end

-- A state made here (a new breaker, one whose state Redis lost without a failover: FLUSHDB,
-- DEL, an allkeys-* eviction, or one reset because it was unreadable) starts at a generation
-- above the stored one and at least the time in microseconds, so above any generation a lost
-- state reached (one per transition, and no breaker makes a transition a microsecond). A
-- process's view never goes back to an older generation (a late reply must not undo a newer
-- one), so a state restarted at 1 would be ignored by every process that knew the old one,
-- and its failures would never trip it.
local function restart_generation()
  return math.max((num(r.generation) or 0) + 1, math.floor(now))
end

local rec
if fresh then
  rec = blank(restart_generation())
elseif not (r.schema == SCHEMA and STATES[r.state] and num(r.generation)) then
  -- Documented policy: unreadable or foreign-version state is reset to CLOSED (with a new
  -- generation, so no old permit can act on it) and reported, never crash-looped on.
  rec = blank(restart_generation())
  corrupt = 1
  redis.call('DEL', TRIALS, WIN)
else
  rec = {schema = SCHEMA, state = r.state, opened_at = r.opened_at or ''}
  for _, name in ipairs(NUMERIC) do rec[name] = num(r[name]) or 0 end
  if rec.next_token == 0 then rec.next_token = 1 end
end

-- ------------------------------------------------------------------ the config in force
local binding = ARGV[4]
local config_text, fp, replaced = r.config, r.fingerprint, ''

-- the items of WINDOW_ITEMS in a stored config text, joined (nil for no config)
local function window_shape(text)
  if not text then return nil end
  local items = {}
  for item in string.gmatch(text .. ',', '([^,]*),') do items[#items + 1] = item end
  local shape = {}
  for i, at in ipairs(WINDOW_ITEMS) do shape[i] = items[at] or '?' end
  return table.concat(shape, ',')
end

local restart_window = false
if binding ~= '' and fp ~= ARGV[3] then
  if fp then replaced = fp end
  -- a state with no readable config has a window of unknown shape: restarted too
  restart_window = not fresh and window_shape(config_text) ~= window_shape(binding)
  -- a first bind starts with zero window counters: a window key left without a state (its
  -- hash deleted alone) would be of unknown shape and uncounted
  if fresh then redis.call('DEL', WIN) end
  config_text, fp = binding, ARGV[3]
end
local C = {}
local CHANNEL, NAME
if config_text then
  local items = {}
  for item in string.gmatch(config_text .. ',', '([^,]*),') do items[#items + 1] = item end
  for i, name in ipairs(CONFIG_ITEMS) do
    local value = items[i]
    if value == nil or (value ~= '' and tonumber(value) == nil) then config_text = nil; break end
    C[name] = num(value)
  end
  CHANNEL, NAME = items[#CONFIG_ITEMS + 1] or '', items[#CONFIG_ITEMS + 2] or ''
end
if not config_text or not C.recovery_timeout or not C.backoff_multiplier then
  return {-1, '', '0', '-1', '0', '', '', 0, '', ''}
end
local FT, FRT, WSIZE, WDUR, MINC = C.failure_threshold, C.failure_rate_threshold, C.window_size,
  C.window_duration, C.minimum_calls
local SLOW, SRT, REC, MULT, MAXREC = C.slow_call_duration, C.slow_call_rate_threshold,
  C.recovery_timeout, C.backoff_multiplier, C.max_recovery_timeout
local HOMAX, STH, LEASE = C.half_open_max_calls, C.success_threshold, C.trial_lease

local function recovery_timeout(reopen)
  local n = reopen - 1
  if n < 0 then n = 0 end
  local t = REC * (MULT ^ n)
  if MAXREC and t > MAXREC then t = MAXREC end
  if t > MAX_DURATION then t = MAX_DURATION end  -- as BreakerConfig.recovery_timeout_for
  return t
end

rec.rejected = rec.rejected + (num(ARGV[5]) or 0)

local last_old, last_trigger = '', ''

-- ------------------------------------------------------------------ window
local function window_clear()
  redis.call('DEL', WIN)
  rec.window_pos, rec.window_calls, rec.window_failures, rec.window_slow = 0, 0, 0, 0
end

local function time_expire()
  local width = WDUR / BUCKETS
  local oldest_kept = math.floor(now / width) - BUCKETS + 1
  local fields = redis.pcall('HKEYS', WIN)
  if fields.err then  -- a ring left by another shape (see repair below)
    window_clear()
    fields = {}
  end
  for _, f in ipairs(fields) do
    if tonumber(f) < oldest_kept then
      local v = redis.call('HGET', WIN, f)
      local c, fl, s = string.match(v, '(%d+) (%d+) (%d+)')
      rec.window_calls = rec.window_calls - tonumber(c)
      rec.window_failures = rec.window_failures - tonumber(fl)
      rec.window_slow = rec.window_slow - tonumber(s)
      redis.call('HDEL', WIN, f)
    end
  end
end

local function window_add(failed, slow)
  local fv, sv = failed and 1 or 0, slow and 1 or 0
  if WSIZE then
    -- Repair: a window in another shape (a bucket hash, or a ring longer than WSIZE) can only
    -- be left by a writer without the rebind rule above (an older aioresil, during a rolling
    -- upgrade): started afresh here instead of failing every call or never wrapping. Free on
    -- the normal path (pcall costs what call does).
    if rec.window_pos >= WSIZE or rec.window_calls > WSIZE then window_clear() end
    local pos = rec.window_pos
    local old = redis.pcall('GETRANGE', WIN, pos, pos)
    if type(old) == 'table' then
      window_clear()
      pos, old = 0, ''
    end
    if old ~= '' and old ~= '-' then
      local o = tonumber(old)
      rec.window_calls = rec.window_calls - 1
      rec.window_failures = rec.window_failures - (o % 2)
      rec.window_slow = rec.window_slow - math.floor(o / 2)
    end
    redis.call('SETRANGE', WIN, pos, tostring(fv + 2 * sv))
    pos = pos + 1
    if pos == WSIZE then pos = 0 end
    rec.window_pos = pos
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
  rec.window_calls = rec.window_calls + 1
  rec.window_failures = rec.window_failures + fv
  rec.window_slow = rec.window_slow + sv
end

local function rate_rule_fires()
  if rec.window_calls < MINC then return false end
  if FRT and rec.window_failures / rec.window_calls >= FRT then return true end
  return SRT ~= nil and rec.window_slow / rec.window_calls >= SRT
end

local has_window = (WSIZE ~= nil) or (WDUR ~= nil)

local window_restarted = 0
if restart_window then
  window_clear()
  window_restarted = 1
end

-- ------------------------------------------------------------------ transitions
local function move(trigger)
  local new = LEGAL[rec.state .. '>' .. trigger]
  if not new then
    return redis.error_reply('AIORESIL_ILLEGAL no transition from ' .. rec.state .. ' on ' ..
      tostring(trigger))
  end
  last_old, last_trigger = rec.state, trigger
  rec.state = new
  rec.generation = rec.generation + 1
  redis.call('DEL', TRIALS)
  rec.trial_successes = 0
  rec.consecutive_failures = 0
  if has_window then window_clear() end
  return nil
end

local function open(trigger)
  local err = move(trigger)
  if err then return err end
  if trigger == 'trial_failed' then rec.reopen_count = rec.reopen_count + 1 else rec.reopen_count = 1 end
  rec.opened_at = fmt(now)
  rec.open_until = now + recovery_timeout(rec.reopen_count)
  return nil
end

-- ------------------------------------------------------------------ operations
local function acquire(client_token)
  local st = rec.state
  if st == 'closed' or st == 'disabled' then return 1, 0 end
  if st == 'open' then
    if now < rec.open_until then
      rec.rejected = rec.rejected + 1
      return 0, 0
    end
    local err = move('timeout_elapsed')
    if err then return err end
    st = rec.state
  end
  if st == 'half_open' then
    -- expired leases (0, now] and expired tombstones [-now, 0) in one call
    redis.call('ZREMRANGEBYSCORE', TRIALS, fmt(-now), fmt(now))
    if client_token and redis.call('ZSCORE', TRIALS, client_token) then
      return 0, 0  -- given back before it arrived: nobody waits for this grant
    end
    if redis.call('ZCOUNT', TRIALS, '(0', '+inf') < HOMAX then
      local token
      if client_token then
        token = tonumber(client_token)
      else
        token = rec.next_token
        rec.next_token = rec.next_token + 1
      end
      redis.call('ZADD', TRIALS, fmt(now + LEASE), fmt(token))
      return 1, token
    end
    rec.rejected = rec.rejected + 1
    return 0, 0
  end
  rec.rejected = rec.rejected + 1
  return 0, 0
end

local function record(gen, token, outcome, duration)
  if outcome == 3 then
    if token > 0 and gen == rec.generation then redis.call('ZREM', TRIALS, fmt(token)) end
    return nil
  end
  local failed = (outcome == 1)
  local slow = (SLOW ~= nil) and duration >= SLOW and outcome ~= 2
  if outcome == 0 then rec.successes = rec.successes + 1
  elseif failed then rec.failures = rec.failures + 1
  else rec.ignored = rec.ignored + 1 end
  if slow then rec.slow = rec.slow + 1 end

  if gen ~= rec.generation then return nil end
  if token > 0 then
    if redis.call('ZREM', TRIALS, fmt(token)) == 0 then return nil end
    if outcome == 2 then return nil end
    if failed then return open('trial_failed') end
    rec.trial_successes = rec.trial_successes + 1
    if rec.trial_successes >= STH then
      rec.reopen_count = 0
      rec.opened_at = ''
      return move('trials_passed')
    end
    return nil
  end
  if rec.state ~= 'closed' or outcome == 2 then return nil end
  if failed then
    rec.consecutive_failures = rec.consecutive_failures + 1
  else
    rec.consecutive_failures = 0
  end
  if has_window then window_add(failed, slow) end
  if not (failed or slow) then return nil end
  if (FT ~= nil and rec.consecutive_failures >= FT) or (has_window and rate_rule_fires()) then
    return open('trip')
  end
  return nil
end

local code, token = 1, 0
if op == 'acquire' then
  local client_token = ARGV[6]
  if client_token == '' then client_token = nil end
  local a, b = acquire(client_token)
  if type(a) == 'table' then return a end
  code, token = a, b
elseif op == 'success' then
  local err = record(tonumber(ARGV[6]), 0, 0, 0)
  if err then return err end
elseif op == 'record' then
  local err = record(tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
    tonumber(ARGV[9]))
  if err then return err end
elseif op == 'batch' then
  local gen = tonumber(ARGV[6])
  local outcomes = ARGV[7]
  local durations = {}
  if ARGV[8] ~= '' then
    for d in string.gmatch(ARGV[8], '([^,]+)') do durations[#durations + 1] = tonumber(d) end
  end
  for i = 1, #outcomes do
    local err = record(gen, 0, tonumber(string.sub(outcomes, i, i)), durations[i] or 0)
    if err then return err end
  end
elseif op == 'operator' then
  local trigger = ARGV[6]
  if not OPERATOR[trigger] then
    return redis.error_reply('AIORESIL_BADOP not an operator action: ' .. tostring(trigger))
  end
  local err = move(trigger)
  if err then return err end
  rec.reopen_count = 0
  rec.open_until = 0
  if trigger == 'force_open' then rec.opened_at = fmt(now) else rec.opened_at = '' end
  if trigger == 'reset' then
    rec.successes, rec.failures, rec.ignored, rec.rejected, rec.slow = 0, 0, 0, 0, 0
  end
elseif op == 'release' then
  local member = ARGV[6]
  if redis.call('ZREM', TRIALS, member) == 0 then
    redis.call('ZADD', TRIALS, fmt(-(now + LEASE)), member)
  end
else
  return redis.error_reply('AIORESIL_BADOP unknown op ' .. tostring(op))
end

-- ------------------------------------------------------------------ save and answer
-- Write only the fields that changed; numbers are compared before formatting (string.format
-- and a full HSET were most of this script's cost).
local changed = {}
local rewrite = fresh or corrupt == 1
for i, name in ipairs(FIELD_NAMES) do
  local value = rec[name]
  if value ~= nil then
    local old = r[name]
    if type(value) == 'number' then
      if rewrite or num(old) ~= value then
        changed[#changed + 1] = FIELD_KEYS[i]
        changed[#changed + 1] = fmt(value)
      end
    elseif rewrite or old ~= value then
      changed[#changed + 1] = FIELD_KEYS[i]
      changed[#changed + 1] = value
    end
  end
end
if fp ~= r.fingerprint then
  changed[#changed + 1] = F.fingerprint
  changed[#changed + 1] = fp
  changed[#changed + 1] = F.config
  changed[#changed + 1] = config_text
end
-- The read row (KEYS[4], breaker_schema.ROW_KEY and ROW_FIELDS): what breaker_read.lua
-- returns for this breaker, kept so a read of 1,000 breakers is one MGET of their rows instead
-- of fourteen fields of each hash (issue 17). Every write but the hot path's goes through
-- here (the hot path writes the success counter in it). Rewritten when a field it holds
-- (IN_ROW) changed, or when the key holds no row (a state written before the row existed, a
-- key lost alone: STRLEN, asked only when nothing it holds changed).
local row_stale = false
for i = 1, #changed, 2 do
  if IN_ROW[changed[i]] then row_stale = true; break end
end
-- (pcall: a key of another type, written by hand, is written over too)
if row_stale or redis.pcall('STRLEN', ROW) ~= ROW_SIZE then
  redis.call('SET', ROW, stored_row(rec, fp))
end
if #changed > 0 then redis.call('HSET', H, unpack(changed)) end

local retry_after = -1
if rec.state == 'open' then
  retry_after = rec.open_until - now
  if retry_after < 0 then retry_after = 0 end
end

if last_trigger ~= '' and CHANNEL ~= '' then
  -- "<encoded name> <state> <generation> <retry_after_us>": other processes update their view
  redis.call('PUBLISH', CHANNEL,
    NAME .. ' ' .. rec.state .. ' ' .. fmt(rec.generation) .. ' ' .. fmt(retry_after))
end

return {code, rec.state, fmt(rec.generation), fmt(retry_after), fmt(token), last_old,
  last_trigger, corrupt, fp, replaced, window_restarted}

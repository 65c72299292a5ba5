-- lib/record.lua: a prelude the script registry prepends to every script that moves a task, so
-- the task's record (src/records.rs) changes in the same atomic step as the task itself and can
-- never disagree with where the task is.
--
-- A record is the HASH '<prefix><task_id>' (prefix 'redrive:{t}:task:', the tenant's hash tag,
-- so the same slot as the lane). Scripts get the prefix, the index and the events stream as
-- KEYS and build a record's name from a task_id they read from their arguments or from the
-- entry; all three share the tenant's tag. When records are off (tasks.enabled = false) the
-- caller passes no such keys and every function here does nothing (`R` is nil).
--
-- Fields (names shared with src/records.rs `field`): state, kind, attempt, entry (the lane
-- entry or schedule item the task is now), enq (this life's enqueue, ms), first (first
-- enqueue), member, started, ended, class, error (≤ 1 KiB), dlq, replay_of, replays,
-- output + output_truncated, due (when a retry_scheduled or deferred task is due again, ms),
-- updated, runs (how many runs are in the history) and per run N of the history the fields
-- 'r<N>:start', 'r<N>:member', 'r<N>:end', 'r<N>:outcome' (a class, or '' for a run whose
-- member died) — the last REC_RUNS_KEPT are kept. The history holds the runs that did not
-- end the task well: a done task's last run is in member, started and ended (readers add it).
--
-- Running: an entry appended together with its record (its `recorded` field: enqueue.lua,
-- promote.lua, replay.lua) starts without a record write — its record keeps saying queued
-- (or replayed) with `entry` = that entry, and readers show it running while the entry is
-- pending in the group (XPENDING names the member). Other starts (a raw XADD, a taken-over
-- entry) write `running`, member and started.
--
-- The index ZSET '<tenant>:tasks' holds every task_id with a record, scored by when its record
-- was first written (ms; an enqueue, or the first move of a task published without one). The
-- events stream '<tenant>:events' (capped near REC_EVENTS_MAX) gets one entry per finish —
-- task, state, entry — while someone waits: a waiter holds a member of the ZSET
-- '<tenant>:waiters' scored by when its registration expires (server clock, ms; see
-- CONTRACT.md), and a script publishes only when one is live (one ZRANGEBYSCORE per script
-- call, not per task). The waiters key is the events key with 'events' replaced by 'waiters'.
--
-- The done log: the done of an entry appended by enqueue.lua (its `recorded` field is the
-- record's expiry, absolute ms: enqueue.lua gives the record the retention plus an eighth as
-- it writes it), acked by fast_ack.lua while that expiry still covers the retention from now,
-- writes nothing per record: the batch's facts are appended (one XADD per batch and window)
-- to the STREAM '<tenant>:done:<window of the entry id>' (100 s: its milliseconds without the
-- last five digits, '0' for fewer than six; a new stream takes ~4.7 KB, so a window of 100 s
-- keeps that small per task for a quiet tenant too, and a reader starts at the entry's own
-- time: the log's ids are ack times) — fields '_m' (member) and '_e' (ended, ms), then
-- per entry: the entry id -> started (ms), and when its output is kept '<entry id>o' (whole)
-- or '<entry id>t' (cut) -> the output. The log key
-- expires with the last record that points into it. Its record keeps saying queued on that
-- entry; readers (task_read.lua) see the entry gone from the lane and take the done from the
-- log. No other path removes a lane entry without writing its record, so "queued, running or
-- replayed on an entry that left the lane" means done (rec_gone).
--
-- Cost: a fresh start of an entry appended with its record writes nothing, any other start
-- reads and writes it (HMGET + HSET); the done of an entry appended with its record, acked by
-- the same call, writes and expires it without a read (HSET + PEXPIRE); other ends read,
-- write and expire it (HMGET + HSET + PEXPIRE); the index is written only when a record is
-- created.
--
-- rec_ctx(prefix, index, events): the record context `R`, or nil when prefix is nil, '' or
--   ends in ':records-off' (records off: Keys::records_off, a key of the tenant's slot).
-- rec_now(): the server's clock in ms.
-- rec_get(R, task_id, ...): HMGET of fields of a record (a table of values, false when absent).
-- rec_write(R, task_id, now, state, pairs): sets state, updated and the field/value list
--   `pairs`, and indexes the task if it was not (ZADD NX). Returns nothing.
-- rec_start(R, task_id, now, entry, attempt, member, kind, refuse_done, died): the start of
--   one attempt: running, entry, attempt, member, started. Returns the record's previous
--   state (false when there was none: the record is created and indexed). When refuse_done is
--   true and that state is 'done' nothing is written (the caller acks the entry as a
--   duplicate). A previous run that never ended — the record says 'running', or (`died`, the
--   member it ran on, '' when unknown) it says queued or replayed on this very entry, which
--   started before — goes into the history without an end (outcome ''; the second kind
--   without a start, which only the PEL knew).
-- rec_end(R, task_id, now, state, outcome, pairs, run_member, run_started): the end of the
--   current run: state, ended, plus `pairs`. The run goes into the history (runs + 1,
--   r<N>:start/member/end/outcome): run_member's, started at run_started (see rec_started_at),
--   as the caller ran it; else, when the record says 'running', the record's member and
--   started.
--   Returns the previous state.
-- rec_done(R, now, entry, task_id, ttl, flag, output, member, started, blind): the done
--   record of an acked entry, in the shape ack.lua and fast_ack.lua receive it (flag '' no
--   output kept, '0' whole, '1' cut; started: see rec_started_at): state done, ended, member,
--   started. Without `blind` it is written only when the record is on this entry and
--   says queued, replayed or running (an ack repeated after a lost reply finds its done
--   record; a record replaced since is another task's). `blind`: the caller acked this entry
--   in the same call and it was appended with its record, so the record is this entry's and
--   is not read (enqueue.lua never replaces the record of a task in flight). The record then
--   expires after ttl and publishes its finish event.
-- rec_begin(R, now, member, refuse, entry, task_id, attempt, kind, recorded): the start of one
--   fresh entry in the shape start.lua and start_fast.lua receive it: nothing when `recorded`
--   is '1' (see Running above), else rec_start. Returns true when the task is a refused
--   duplicate.
-- rec_expire(R, task_id, ttl): a finished record expires after ttl ms (0 or less: kept, as
--   while its dead letter exists).
-- rec_event(R, task_id, state, entry): one entry in the events stream, if someone waits.
-- rec_error(text): an error text bounded to REC_ERROR_MAX bytes.
-- rec_gone(lane, entry): whether lane entry `entry` has left `lane` (false for a malformed id).
-- rec_log_key(R, window): the done log of entries of that window (the milliseconds of the
--   entry id without their last five digits; '0' for fewer than six).
-- rec_started_at(started, now): when a run started as its member tells (ms by the server's
--   clock as the member estimates it, text; passed on as it is, no number formatting), or now
--   when that is missing, 0 or later than now (the estimate can be off by a little).
local REC_RUNS_KEPT = 16
local REC_ERROR_MAX = 1024
local REC_EVENTS_MAX = 10000
local REC_NOW = nil
local REC_TS = nil

local function rec_ctx(prefix, index, events)
  -- Records off: the caller passes the tenant's `<prefix>:{t}:records-off` (a key of the
  -- tenant's slot, never written, so the call stays single-slot on a cluster); '' is read
  -- alike.
  if prefix == nil or prefix == '' or string.sub(prefix, -12) == ':records-off' then
    return nil
  end
  return {prefix = prefix, index = index, events = events, listened = nil}
end

local function rec_now()
  if REC_NOW == nil then
    local t = redis.call('TIME')
    REC_NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    REC_TS = string.format('%d', REC_NOW)
  end
  return REC_NOW
end

-- `now` as text (the cached one when it is the script's clock).
local function rec_ts(now)
  if now == REC_NOW and REC_TS then
    return REC_TS
  end
  return string.format('%d', now)
end

-- See the header.
local function rec_gone(lane, entry)
  local r = redis.pcall('XRANGE', lane, entry, entry)
  return type(r) == 'table' and r.err == nil and #r == 0
end

local function rec_log_key(R, window)
  if R.log == nil then
    -- 'redrive:{t}:task:' -> 'redrive:{t}:done:'
    R.log = string.sub(R.prefix, 1, #R.prefix - 5) .. 'done:'
  end
  return R.log .. window
end

local function rec_get(R, task_id, ...)
  return redis.call('HMGET', R.prefix .. task_id, ...)
end

local function rec_write(R, task_id, now, state, pairs)
  if R == nil then
    return
  end
  local args = {'HSET', R.prefix .. task_id, 'state', state, 'updated', rec_ts(now)}
  if pairs then
    for _, v in ipairs(pairs) do
      args[#args + 1] = v
    end
  end
  redis.call(unpack(args))
  redis.call('ZADD', R.index, 'NX', now, task_id)
end

-- Drops the per-run fields of run `n` (kept: the last REC_RUNS_KEPT).
local function rec_forget_run(key, n)
  if n > 0 then
    redis.call('HDEL', key, 'r' .. n .. ':start', 'r' .. n .. ':member', 'r' .. n .. ':end',
      'r' .. n .. ':outcome')
  end
end

local function rec_start(R, task_id, now, entry, attempt, member, kind, refuse_done, died)
  if R == nil then
    return false
  end
  local key = R.prefix .. task_id
  local old = redis.call('HMGET', key, 'state', 'runs', 'member', 'started', 'entry')
  if refuse_done and old[1] == 'done' then
    return old[1]
  end
  if refuse_done and old[5] and old[5] ~= entry and R.lane
    and (old[1] == 'queued' or old[1] == 'replayed' or old[1] == 'running')
    and rec_gone(R.lane, old[5]) then
    -- Its entry left the lane without a record write: done through the done log.
    return 'done'
  end
  local ts = rec_ts(now)
  if not old[1] then
    -- A task published without a record (a raw XADD): its record starts here.
    redis.call('HSET', key, 'state', 'running', 'updated', ts, 'entry', entry, 'attempt', attempt,
      'member', member, 'started', ts, 'runs', 0, 'kind', kind, 'first', ts, 'enq', ts)
    redis.call('ZADD', R.index, 'NX', now, task_id)
    return false
  end
  local dead = nil
  if old[1] == 'running' and old[3] then
    -- The previous run never ended: its member died.
    dead = {old[4] or '', old[3]}
  elseif died and old[5] == entry and (old[1] == 'queued' or old[1] == 'replayed') then
    -- Started before without a record write (see Running) on `died`, which died.
    dead = {'', died}
  end
  if dead then
    local n = (tonumber(old[2]) or 0) + 1
    redis.call('HSET', key, 'runs', n, 'r' .. n .. ':start', dead[1], 'r' .. n .. ':member',
      dead[2], 'r' .. n .. ':outcome', '')
    rec_forget_run(key, n - REC_RUNS_KEPT)
  end
  redis.call('HSET', key, 'state', 'running', 'updated', ts, 'entry', entry, 'attempt', attempt,
    'member', member, 'started', ts)
  -- A record given an expiry at enqueue is kept while its task is in flight.
  redis.call('PERSIST', key)
  return old[1]
end

-- See the header.
local function rec_started_at(started, now)
  local t = tonumber(started)
  if t == nil or t <= 0 or t > now then
    return rec_ts(now)
  end
  return started
end

local function rec_end(R, task_id, now, state, outcome, pairs, run_member, run_started)
  if R == nil then
    return false
  end
  local key = R.prefix .. task_id
  local old = redis.call('HMGET', key, 'state', 'runs', 'member', 'started')
  local ts = rec_ts(now)
  local args = {'HSET', key, 'state', state, 'updated', ts, 'ended', ts}
  local member, started = nil, nil
  if run_member ~= nil and run_member ~= '' then
    member = run_member
    started = rec_started_at(run_started, now)
    args[#args + 1] = 'member'
    args[#args + 1] = member
    args[#args + 1] = 'started'
    args[#args + 1] = started
  elseif old[1] == 'running' then
    member, started = old[3] or '', old[4] or ''
  end
  local n = 0
  if member ~= nil then
    n = (tonumber(old[2]) or 0) + 1
    local r = 'r' .. n
    args[#args + 1] = 'runs'
    args[#args + 1] = n
    args[#args + 1] = r .. ':start'
    args[#args + 1] = started
    args[#args + 1] = r .. ':member'
    args[#args + 1] = member
    args[#args + 1] = r .. ':end'
    args[#args + 1] = ts
    args[#args + 1] = r .. ':outcome'
    args[#args + 1] = outcome
  end
  if pairs then
    for _, v in ipairs(pairs) do
      args[#args + 1] = v
    end
  end
  redis.call(unpack(args))
  rec_forget_run(key, n - REC_RUNS_KEPT)
  if state == 'retry_scheduled' or state == 'deferred' then
    -- A record given an expiry at enqueue is kept while its task is in flight.
    redis.call('PERSIST', key)
  end
  if not old[1] then
    -- A task without a record that ends here (never started: expired, unrouted, malformed).
    redis.call('ZADD', R.index, 'NX', now, task_id)
  end
  return old[1]
end

local function rec_begin(R, now, member, refuse, entry, task_id, attempt, kind, recorded)
  if R == nil then
    return false
  end
  if recorded == '1' then
    return false
  end
  return rec_start(R, task_id, now, entry, attempt, member, kind, refuse) == 'done' and refuse
end

-- The record `key` expires after ttl ms (given as text, passed on as it is: no number
-- formatting), or is kept (0 or less).
local function rec_expire_key(key, ttl)
  if (tonumber(ttl) or 0) > 0 then
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
end

local function rec_expire(R, task_id, ttl)
  if R == nil then
    return
  end
  rec_expire_key(R.prefix .. task_id, ttl)
end

-- Whether a waiter is registered (checked once per script call).
local function rec_listened(R)
  if R.listened == nil then
    R.listened = false
    if R.events ~= nil and R.events ~= '' then
      local waiters = string.sub(R.events, 1, #R.events - 6) .. 'waiters'
      local live = redis.call('ZRANGEBYSCORE', waiters, rec_now(), '+inf', 'LIMIT', 0, 1)
      R.listened = #live > 0
    end
  end
  return R.listened
end

local function rec_event(R, task_id, state, entry)
  if R == nil or not rec_listened(R) then
    return
  end
  redis.call('XADD', R.events, 'MAXLEN', '~', REC_EVENTS_MAX, '*', 'task', task_id, 'state', state,
    'entry', entry or '')
end

local function rec_done(R, now, entry, task_id, ttl, flag, output, member, started, blind)
  if R == nil or task_id == '' then
    return
  end
  local key = R.prefix .. task_id
  if not blind then
    local old = redis.call('HMGET', key, 'state', 'entry')
    if old[2] ~= entry
      or not (old[1] == 'queued' or old[1] == 'running' or old[1] == 'replayed') then
      return
    end
  end
  local ts = rec_ts(now)
  started = rec_started_at(started, now)
  if flag == '1' then
    redis.call('HSET', key, 'state', 'done', 'updated', ts, 'ended', ts, 'member', member,
      'started', started, 'output', output, 'output_truncated', '1')
  elseif flag ~= '' then
    redis.call('HSET', key, 'state', 'done', 'updated', ts, 'ended', ts, 'member', member,
      'started', started, 'output', output)
  else
    redis.call('HSET', key, 'state', 'done', 'updated', ts, 'ended', ts, 'member', member,
      'started', started)
  end
  rec_expire_key(key, ttl)
  rec_event(R, task_id, 'done', entry)
end

local function rec_error(text)
  if text == nil then
    return ''
  end
  if #text <= REC_ERROR_MAX then
    return text
  end
  -- Cut on a UTF-8 boundary: drop continuation bytes (10xxxxxx) at the cut.
  local cut = REC_ERROR_MAX
  while cut > 0 do
    local b = string.byte(text, cut + 1)
    if b == nil or b < 128 or b >= 192 then
      break
    end
    cut = cut - 1
  end
  return string.sub(text, 1, cut)
end

-- enqueue.lua: one task enters its tenant's lane with its record, unless its task_id already
-- has a live one (check + append + record, one atomic step: of two enqueues of the same
-- task_id racing from any number of processes exactly one appends). The SDKs (sdk/python,
-- sdk/node) ship this file byte for byte; their tests compare it with this one.
--
-- KEYS[1]  the tenant's lane stream
-- KEYS[2]  the task's record (HASH redrive:{t}:task:<task_id>, see lib/record.lua)
-- KEYS[3]  the tenant's record index (ZSET redrive:{t}:tasks)
-- KEYS[4]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- ARGV[1]  '1': refuse a task_id whose record is live (queued, running, retry_scheduled,
--          deferred, done, dead_lettered, expired, replayed); '0': the producer reuses ids on
--          purpose (tasks.dedup = false): a new record replaces the old one, unless that task
--          is still in flight (queued, running, retry_scheduled, deferred, replayed): one
--          task_id has one record, and the done of an entry appended with its record writes it
--          without a read
-- ARGV[2]  the task_id
-- ARGV[3]  the task's kind
-- ARGV[4]  the task's attempt
-- ARGV[5]  how long a stats bucket is kept, ms
-- ARGV[6]  the retention of the task's finished record, ms (tasks.retention for its tenant and
--          kind): the record expires that long plus an eighth after this enqueue, and the
--          entry's `recorded` field says when (absolute ms), so the member that finishes the
--          task soon enough need not write the record again (the done log, lib/record.lua).
--          '0', or less than an hour: no expiry now (the member's done sets it), `recorded`
--          is '1'.
-- ARGV[7…] field, value, … of the lane entry (the task as CONTRACT.md writes it)
--
-- Returns {1, entry id} when appended, or {0, state, entry} for a duplicate: nothing was
-- written but the count of duplicates in the tenant's stats bucket of the current minute
-- ('duplicates'); state and entry are the live record's (`done` for a record that says
-- queued, running or replayed on an entry that has left the lane: done through the done log).
--
-- The record is read before anything is written; the XADD is the first write, so while Redis
-- is over maxmemory the whole script is refused and nothing is written.
-- `rec_ctx`, `rec_now` and `rec_write` come from lib/record.lua, which the script registry
-- prepends (the SDKs' copies are the prepended text).
local R = rec_ctx(string.sub(KEYS[2], 1, #KEYS[2] - #ARGV[2]), KEYS[3], nil)
local now = rec_now()
local old = redis.call('HMGET', KEYS[2], 'state', 'entry')
if (old[1] == 'queued' or old[1] == 'running' or old[1] == 'replayed') and old[2]
  and rec_gone(KEYS[1], old[2]) then
  old[1] = 'done'
end
if old[1] then
  local live = {
    queued = true, running = true, retry_scheduled = true, deferred = true, done = true,
    dead_lettered = true, expired = true, replayed = true,
  }
  local flight = {
    queued = true, running = true, retry_scheduled = true, deferred = true, replayed = true,
  }
  if (ARGV[1] == '1' and live[old[1]]) or flight[old[1]] then
    local bucket = KEYS[4] .. math.floor(now / 60000)
    if redis.call('HINCRBY', bucket, 'duplicates', 1) == 1 then
      redis.call('PEXPIRE', bucket, ARGV[5])
    end
    return {0, old[1], old[2] or ''}
  end
end
-- `recorded`: the record is written with the entry, so its start need not read it (a
-- producer's own `recorded` field is dropped: the name is reserved).
local fields = {}
for i = 7, #ARGV, 2 do
  if ARGV[i] ~= 'recorded' then
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
end
-- Only a retention of an hour or more: the records sweep's lane look must reach a task that
-- waits long before its record expires (see records_sweep.lua).
local keep = math.floor(tonumber(ARGV[6]) or 0)
local till_ts = '1'
if keep >= 3600000 then
  till_ts = string.format('%d', now + keep + math.floor(keep / 8))
end
fields[#fields + 1] = 'recorded'
fields[#fields + 1] = till_ts
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
if old[1] then
  -- A record replaced (ids reused on purpose, or the old task was resolved or discarded by an
  -- operator): the new task's record starts empty.
  redis.call('DEL', KEYS[2])
end
local ts = string.format('%d', now)
rec_write(R, ARGV[2], now, 'queued', {
  'kind', ARGV[3], 'attempt', ARGV[4], 'entry', id, 'enq', ts, 'first', ts, 'runs', 0,
})
if old[1] then
  redis.call('ZADD', KEYS[3], now, ARGV[2])
end
if till_ts ~= '1' then
  redis.call('PEXPIREAT', KEYS[2], till_ts)
end
return {1, id}

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
-- updated, runs (how many starts so far) and per start N the fields
-- 'r<N>:start', 'r<N>:member', 'r<N>:end', 'r<N>:outcome' ('ok' or a class) — the last
-- REC_RUNS_KEPT starts are kept.
--
-- The index ZSET '<tenant>:tasks' holds every task_id with a record, scored by when its record
-- was first written (ms; an enqueue, or the first move of a task published without one). The
-- events stream '<tenant>:events' (capped near REC_EVENTS_MAX) gets one entry per finish —
-- task, state, entry — while someone waits: a waiter holds a member of the ZSET
-- '<tenant>:waiters' scored by when its registration expires (server clock, ms; see
-- CONTRACT.md), and a script publishes only when one is live (one ZRANGEBYSCORE per script
-- call, not per task). The waiters key is the events key with 'events' replaced by 'waiters'.
--
-- Cost: a fresh start of an entry appended with its record writes it (HSET), any other start
-- reads and writes it (HMGET + HSET); an end reads, writes and expires it (HMGET + HSET +
-- PEXPIRE); the index is written only when a record is created.
--
-- rec_ctx(prefix, index, events): the record context `R`, or nil when prefix is nil or ''.
-- rec_now(): the server's clock in ms.
-- rec_get(R, task_id, ...): HMGET of fields of a record (a table of values, false when absent).
-- rec_write(R, task_id, now, state, pairs): sets state, updated and the field/value list
--   `pairs`, and indexes the task if it was not (ZADD NX). Returns nothing.
-- rec_start(R, task_id, now, entry, attempt, member, kind, refuse_done): the start of one
--   attempt: running, entry, attempt, member, started. Returns the record's previous state
--   (false when there was none: the record is created and indexed). When refuse_done is true
--   and that state is 'done' nothing is written (the caller acks the entry as a duplicate). A
--   previous state 'running' means that run's member died: it goes into the history (r<N>
--   without an end).
-- rec_started(R, task_id, now, member): the start of an entry whose record the script that
--   appended it wrote (its `recorded` field; enqueue.lua, promote.lua, replay.lua): running,
--   member, started — one HSET, nothing read (the record exists, says queued or replayed with
--   this entry, and duplicates were refused when it was appended).
-- rec_end(R, task_id, now, state, outcome, pairs, only_running): the end of the current run:
--   state, ended, plus `pairs`; a record that says 'running' gets the run into its history
--   (runs + 1, r<N>:start/member from started/member, r<N>:end, r<N>:outcome). With
--   only_running, a record that does not say 'running' is left alone (an ack repeated after a
--   lost reply). Returns the previous state.
-- rec_done(R, now, entry, task_id, ttl, flag, output): the done record of an acked entry, in
--   the shape ack.lua and fast_ack.lua receive it (flag '' no output kept, '0' whole, '1' cut):
--   only a record that says running becomes done (an ack repeated after a lost reply finds its
--   done record), then expires after ttl and publishes its finish event.
-- rec_begin(R, now, member, refuse, entry, task_id, attempt, kind, recorded): the start of one
--   fresh entry in the shape start.lua and start_fast.lua receive it: rec_started when
--   `recorded` is '1', else rec_start. Returns true when the task is a refused duplicate.
-- rec_expire(R, task_id, ttl): a finished record expires after ttl ms (0 or less: kept, as
--   while its dead letter exists).
-- rec_event(R, task_id, state, entry): one entry in the events stream, if someone waits.
-- rec_error(text): an error text bounded to REC_ERROR_MAX bytes.
local REC_RUNS_KEPT = 16
local REC_ERROR_MAX = 1024
local REC_EVENTS_MAX = 10000
local REC_NOW = nil
local REC_TS = nil

local function rec_ctx(prefix, index, events)
  if prefix == nil or prefix == '' then
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

local function rec_start(R, task_id, now, entry, attempt, member, kind, refuse_done)
  if R == nil then
    return false
  end
  local key = R.prefix .. task_id
  local old = redis.call('HMGET', key, 'state', 'runs', 'member', 'started')
  if refuse_done and old[1] == 'done' then
    return old[1]
  end
  local ts = rec_ts(now)
  if not old[1] then
    -- A task published without a record (a raw XADD): its record starts here.
    redis.call('HSET', key, 'state', 'running', 'updated', ts, 'entry', entry, 'attempt', attempt,
      'member', member, 'started', ts, 'runs', 0, 'kind', kind, 'first', ts, 'enq', ts)
    redis.call('ZADD', R.index, 'NX', now, task_id)
    return false
  end
  if old[1] == 'running' and old[3] then
    -- The previous run never ended: its member died. It stays in the history, without an end.
    local n = (tonumber(old[2]) or 0) + 1
    redis.call('HSET', key, 'runs', n, 'r' .. n .. ':start', old[4] or '', 'r' .. n .. ':member',
      old[3])
    rec_forget_run(key, n - REC_RUNS_KEPT)
  end
  redis.call('HSET', key, 'state', 'running', 'updated', ts, 'entry', entry, 'attempt', attempt,
    'member', member, 'started', ts)
  return old[1]
end

local function rec_started(R, task_id, now, member)
  if R == nil then
    return
  end
  local ts = rec_ts(now)
  redis.call('HSET', R.prefix .. task_id, 'state', 'running', 'updated', ts, 'member', member,
    'started', ts)
end

local function rec_end(R, task_id, now, state, outcome, pairs, only_running)
  if R == nil then
    return false
  end
  local key = R.prefix .. task_id
  local old = redis.call('HMGET', key, 'state', 'runs', 'member', 'started')
  if only_running and old[1] ~= 'running' then
    return old[1]
  end
  local ts = rec_ts(now)
  local args = {'HSET', key, 'state', state, 'updated', ts, 'ended', ts}
  local n = 0
  if old[1] == 'running' then
    n = (tonumber(old[2]) or 0) + 1
    local r = 'r' .. n
    args[#args + 1] = 'runs'
    args[#args + 1] = n
    args[#args + 1] = r .. ':start'
    args[#args + 1] = old[4] or ''
    args[#args + 1] = r .. ':member'
    args[#args + 1] = old[3] or ''
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
    rec_started(R, task_id, now, member)
    return false
  end
  return rec_start(R, task_id, now, entry, attempt, member, kind, refuse) == 'done' and refuse
end

local function rec_expire(R, task_id, ttl)
  if R == nil then
    return
  end
  ttl = tonumber(ttl) or 0
  if ttl > 0 then
    redis.call('PEXPIRE', R.prefix .. task_id, ttl)
  else
    redis.call('PERSIST', R.prefix .. task_id)
  end
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

local function rec_done(R, now, entry, task_id, ttl, flag, output)
  if R == nil or task_id == '' then
    return
  end
  local pairs = nil
  if flag == '1' then
    pairs = {'output', output, 'output_truncated', '1'}
  elseif flag ~= '' then
    pairs = {'output', output}
  end
  if rec_end(R, task_id, now, 'done', 'ok', pairs, true) == 'running' then
    rec_expire(R, task_id, ttl)
    rec_event(R, task_id, 'done', entry)
  end
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


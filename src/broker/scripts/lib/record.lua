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
-- The index ZSET '<tenant>:tasks' holds every task_id with a record, scored by its last change
-- (ms). The events stream '<tenant>:events' (capped near REC_EVENTS_MAX) gets one entry per
-- finish: task, state, entry — what `wait` blocks on.
--
-- rec_ctx(prefix, index, events): the record context `R`, or nil when prefix is nil or ''.
-- rec_now(): the server's clock in ms.
-- rec_get(R, task_id, ...): HMGET of fields of a record (a table of values, false when absent).
-- rec_write(R, task_id, now, state, pairs): sets state, updated and the field/value list
--   `pairs`, and indexes the task. Returns nothing.
-- rec_start(R, task_id, now, entry, attempt, member, kind, refuse_done): the start of one
--   attempt. Returns the record's previous state (false when there was none). When
--   refuse_done is true and that state is 'done' nothing is written (the caller acks the entry
--   as a duplicate).
-- rec_end(R, task_id, now, state, outcome, pairs): the end of the current run: state, ended,
--   r<N>:end and r<N>:outcome, plus `pairs`.
-- rec_expire(R, task_id, ttl): a finished record expires after ttl ms (0 or less: kept, as
--   while its dead letter exists).
-- rec_event(R, task_id, state, entry): one entry in the events stream.
-- rec_error(text): an error text bounded to REC_ERROR_MAX bytes.
local REC_RUNS_KEPT = 16
local REC_ERROR_MAX = 1024
local REC_EVENTS_MAX = 10000

local function rec_ctx(prefix, index, events)
  if prefix == nil or prefix == '' then
    return nil
  end
  return {prefix = prefix, index = index, events = events}
end

local function rec_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function rec_get(R, task_id, ...)
  return redis.call('HMGET', R.prefix .. task_id, ...)
end

local function rec_write(R, task_id, now, state, pairs)
  if R == nil then
    return
  end
  local args = {'HSET', R.prefix .. task_id, 'state', state, 'updated', string.format('%d', now)}
  if pairs then
    for _, v in ipairs(pairs) do
      args[#args + 1] = v
    end
  end
  redis.call(unpack(args))
  redis.call('ZADD', R.index, now, task_id)
end

local function rec_start(R, task_id, now, entry, attempt, member, kind, refuse_done)
  if R == nil then
    return false
  end
  local key = R.prefix .. task_id
  local old = redis.call('HMGET', key, 'state', 'runs', 'first')
  if refuse_done and old[1] == 'done' then
    return old[1]
  end
  local n = (tonumber(old[2]) or 0) + 1
  local ts = string.format('%d', now)
  local pairs = {
    'entry', entry, 'attempt', attempt, 'member', member, 'started', ts, 'runs', n,
    'r' .. n .. ':start', ts, 'r' .. n .. ':member', member,
  }
  if not old[1] then
    -- A task published without a record (a raw XADD): its record starts here.
    pairs[#pairs + 1] = 'kind'
    pairs[#pairs + 1] = kind
    pairs[#pairs + 1] = 'first'
    pairs[#pairs + 1] = ts
    pairs[#pairs + 1] = 'enq'
    pairs[#pairs + 1] = ts
  end
  rec_write(R, task_id, now, 'running', pairs)
  local gone = n - REC_RUNS_KEPT
  if gone > 0 then
    redis.call('HDEL', key, 'r' .. gone .. ':start', 'r' .. gone .. ':member', 'r' .. gone .. ':end',
      'r' .. gone .. ':outcome')
  end
  return old[1]
end

local function rec_end(R, task_id, now, state, outcome, pairs)
  if R == nil then
    return
  end
  local n = redis.call('HGET', R.prefix .. task_id, 'runs')
  local ts = string.format('%d', now)
  local all = {'ended', ts}
  if n then
    all[#all + 1] = 'r' .. n .. ':end'
    all[#all + 1] = ts
    all[#all + 1] = 'r' .. n .. ':outcome'
    all[#all + 1] = outcome
  end
  if pairs then
    for _, v in ipairs(pairs) do
      all[#all + 1] = v
    end
  end
  rec_write(R, task_id, now, state, all)
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

local function rec_event(R, task_id, state, entry)
  if R == nil or R.events == nil then
    return
  end
  redis.call('XADD', R.events, 'MAXLEN', '~', REC_EVENTS_MAX, '*', 'task', task_id, 'state', state,
    'entry', entry or '')
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


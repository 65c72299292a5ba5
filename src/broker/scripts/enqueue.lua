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

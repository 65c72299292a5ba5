-- ack.lua: completed entries leave their lane (ack + delete, one atomic step), but only those
-- this consumer still owns: a member that lost an entry to a reclaim must not settle it. What
-- it acks is counted in the tenant's stats bucket of the current minute, and each acked task's
-- record says `done` (with its output, expiring after its retention, and a finish event), in
-- the same step.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- KEYS[3]  the prefix of the tenant's task records ('redrive:{t}:task:'), or the tenant's
--          'redrive:{t}:records-off' when records are off (tasks.enabled = false): then no record is read or written
-- KEYS[4]  the tenant's record index (ZSET)
-- KEYS[5]  the tenant's events stream (one entry per finish)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the smallest of the ids
-- ARGV[4]  the largest of the ids
-- ARGV[5]  how long a stats bucket is kept, ms
-- ARGV[6]  how many of the entries (the first ones) completed after an earlier failure or a
--          replay
-- ARGV[7]  the stats field the acked entries count in: 'completed', or 'duplicates' for
--          entries acked without running because their task was already done
-- ARGV[8]  n: how many of the ids may have recorded steps (see step.lua)
-- ARGV[9…8+n] those ids; KEYS[5+i] is the steps hash of ARGV[8+i], deleted when the id is acked
-- ARGV[9+n…] quintuples, one per entry (at most fleet.ack_batch): entry id, task_id ('': write
--          no record), retention of the done record in ms, output flag ('': no output kept,
--          '0': the output whole, '1': cut to tasks.max_output_bytes and marked), output text
--
-- Ownership is read with one XPENDING over [smallest, largest] filtered to this consumer
-- (paged by 1000), instead of one call per id: the consumer's PEL is bounded by its unsettled
-- limit, so the range holds few entries besides the batch.
--
-- An entry no longer pending here whose record says `running` on this very entry (another
-- member took it over and has not finished it) is marked `done` too, but not acked: the work
-- was done, so its new owner's start finds the task done and acks it as a duplicate instead
-- of running the handler a second time (a redelivery after a lost ack).
--
-- Returns {acked, marked}: the number of ids acked and deleted (the others were not pending
-- for this consumer: settled already, or reclaimed by another member, who now owns them), and
-- how many of those others were marked done as above.
-- `chunks` and `ackdel` (batch writes, ack + delete, in chunks of ids) come from lib/chunks.lua; `rec_ctx`, `rec_now`,
-- `rec_get`, `rec_end`, `rec_expire` and `rec_event` from lib/record.lua; the script registry
-- prepends both.
local mine = {}
local start = ARGV[3]
while true do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], start, ARGV[4], 1000, ARGV[2])
  for _, e in ipairs(p) do
    mine[e[1]] = true
  end
  if #p < 1000 then
    break
  end
  start = '(' .. p[#p][1]
end
local owned, at, others, recovered = {}, {}, {}, 0
local r = tonumber(ARGV[6])
local n = tonumber(ARGV[8])
local first = 9 + n
for i = first, #ARGV, 7 do
  if mine[ARGV[i]] then
    owned[#owned + 1] = ARGV[i]
    at[#at + 1] = i
    if i < first + 7 * r then
      recovered = recovered + 1
    end
  elseif ARGV[i + 1] ~= '' then
    others[#others + 1] = i
  end
end
local R = rec_ctx(KEYS[3], KEYS[4], KEYS[5])
-- The done record of the entry at ARGV[k] (rec_done, lib/record.lua); `blind` for entries
-- acked here that were appended with their record.
local function done(now, k, blind)
  rec_done(R, now, ARGV[k], ARGV[k + 1], ARGV[k + 2], ARGV[k + 3], ARGV[k + 4], ARGV[2],
    ARGV[k + 5], blind and ARGV[k + 6] ~= '0' and ARGV[k + 6] ~= '')
end
local marked = 0
if #owned > 0 then
  -- The ack first (ackdel: XACK or XACKDEL): it frees memory, so Redis runs the script even while over maxmemory, and the
  -- writes after it (records, stats) cannot be refused on their own.
  ackdel(KEYS[1], ARGV[1], owned)
  local steps = {}
  for i = 1, n do
    if mine[ARGV[8 + i]] then
      steps[#steps + 1] = KEYS[5 + i]
    end
  end
  if #steps > 0 then
    chunks('DEL', {}, steps, 1000)
  end
end
if R and (#owned > 0 or #others > 0) then
  local now = rec_now()
  for _, k in ipairs(at) do
    if ARGV[k + 1] ~= '' then
      done(now, k, true)
    end
  end
  for _, k in ipairs(others) do
    local rec = rec_get(R, ARGV[k + 1], 'state', 'entry')
    if rec[2] == ARGV[k]
      and (rec[1] == 'running' or rec[1] == 'queued' or rec[1] == 'replayed') then
      done(now, k, false)
      marked = marked + 1
    end
  end
end
if #owned == 0 then
  return {0, marked}
end
local t = redis.call('TIME')
local bucket = KEYS[2] .. math.floor(tonumber(t[1]) / 60)
if redis.call('HINCRBY', bucket, ARGV[7], #owned) == #owned then
  redis.call('PEXPIRE', bucket, ARGV[5])
end
if recovered > 0 then
  redis.call('HINCRBY', bucket, 'recovered', recovered)
end
return {#owned, marked}

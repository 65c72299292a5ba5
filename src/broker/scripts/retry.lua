-- retry.lua: failed attempts leave their lane and are scheduled for their next attempt (owner
-- check + ack + schedule + delete, one atomic step for the whole batch; both keys share the
-- tenant's tag). Each scheduled task's record says `retry_scheduled` (the run ends with the
-- failure's class as its outcome; class, error and the next attempt recorded), in the same
-- step.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the tenant's retry schedule (ZSET scored by due time, ms)
-- KEYS[3]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- KEYS[4]  the prefix of the tenant's task records ('redrive:{t}:task:'), or the tenant's
--          'redrive:{t}:records-off' when records are off (tasks.enabled = false): then no record is written
-- KEYS[5]  the tenant's record index (ZSET)
-- KEYS[6…] the steps hash of each item's entry, in the order of the items (see step.lua):
--          an owned entry's records are folded into its schedule member as 'recorded_steps'
--          (before `from_entry`, which stays last) and the hash is deleted with the entry
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer that must own the entries (this member)
-- ARGV[3]  how long a stats bucket is kept, ms
-- ARGV[4…] items of eight: entry id in the lane, delay in ms (from the server's clock),
--          schedule member (a JSON array [field, value, …] of the next attempt, unique because
--          it holds `from_entry`, the lane entry id: identical tasks never collapse into one
--          member), task_id ('': no record), the next attempt, the failure's class, its error
--          (cut to 1 KiB by rec_error), when the failed run started (ms, the server's clock as
--          the member estimates it; the run in the record's history: ARGV[2]'s); at most
--          fleet.ack_batch items
--
-- Returns one value per item: the due time (ms, server clock), or -1 when this consumer no
-- longer owns that entry (nothing is written for it). What it schedules is counted as
-- `retried` in the tenant's stats bucket of the current minute, in the same step.
--
-- The schedule is written first: a retry adds data, so while Redis is over maxmemory it refuses
-- the whole script (nothing written, the entries stay pending for the settler to try again),
-- whereas a script whose first write is XACK would be let through. (Only the first write is
-- checked: the later ZADD chunks go through once the first has.)

-- `chunks` and `ackdel` (batch writes, ack + delete, in chunks of ids) come from lib/chunks.lua, `owned` (the ownership
-- check of the whole batch: one ranged XPENDING, not one per item) from lib/owned.lua,
-- `recorded_steps` and `fold_steps` from lib/steps.lua, `rec_*` from lib/record.lua; the
-- script registry prepends them.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = {}
for i = 4, #ARGV, 8 do
  ids[#ids + 1] = ARGV[i]
end
local mine = owned(KEYS[1], ARGV[1], ARGV[2], ids)
local out, moved, zadd, steps, recs = {}, {}, {}, {}, {}
for i = 4, #ARGV, 8 do
  local id = ARGV[i]
  if not mine[id] then
    out[#out + 1] = -1
  else
    local due = now + tonumber(ARGV[i + 1])
    local member = ARGV[i + 2]
    local key = KEYS[6 + (i - 4) / 8]
    local rec = recorded_steps(key)
    if rec then
      local ok, flat = pcall(cjson.decode, member)
      if ok and type(flat) == 'table' then
        -- Strings only (field names and values): nothing is rounded by the round trip.
        fold_steps(flat, rec)
        member = cjson.encode(flat)
      end
      -- Deleted with the entry either way: a member that is not a JSON array cannot carry the
      -- steps, and promote.lua turns it into an unreadable_retry dead letter anyway; kept, the
      -- hash would outlive its entry forever.
      steps[#steps + 1] = key
    end
    out[#out + 1] = due
    moved[#moved + 1] = id
    zadd[#zadd + 1] = due
    zadd[#zadd + 1] = member
    if ARGV[i + 3] ~= '' then
      recs[#recs + 1] = i
    end
  end
end
if #moved > 0 then
  chunks('ZADD', {KEYS[2]}, zadd, 2000)
  ackdel(KEYS[1], ARGV[1], moved)
  if #steps > 0 then
    chunks('DEL', {}, steps, 1000)
  end
  local R = rec_ctx(KEYS[4], KEYS[5], nil)
  if R then
    for _, i in ipairs(recs) do
      local class = ARGV[i + 5]
      rec_end(R, ARGV[i + 3], now, 'retry_scheduled', class, {
        'class', class, 'error', rec_error(ARGV[i + 6]), 'attempt', ARGV[i + 4],
        'due', string.format('%d', now + tonumber(ARGV[i + 1])),
      }, ARGV[2], ARGV[i + 7])
    end
  end
  local bucket = KEYS[3] .. math.floor(tonumber(t[1]) / 60)
  if redis.call('HINCRBY', bucket, 'retried', #moved) == #moved then
    redis.call('PEXPIRE', bucket, ARGV[3])
  end
end
return out

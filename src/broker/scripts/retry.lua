-- retry.lua: failed attempts leave their lane and are scheduled for their next attempt (owner
-- check + ack + schedule + delete, one atomic step for the whole batch; both keys share the
-- tenant's tag).
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the tenant's retry schedule (ZSET scored by due time, ms)
-- KEYS[3]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- KEYS[4…] the steps hash of each triple's entry, in the order of the triples (see step.lua):
--          an owned entry's records are folded into its schedule member as 'recorded_steps'
--          (before `from_entry`, which stays last) and the hash is deleted with the entry
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer that must own the entries (this member)
-- ARGV[3]  how long a stats bucket is kept, ms
-- ARGV[4…] triples: entry id in the lane, delay in ms (from the server's clock), schedule
--          member (a JSON array [field, value, …] of the next attempt, unique because it holds
--          `from_entry`, the lane entry id: identical tasks never collapse into one member);
--          at most fleet.ack_batch triples
--
-- Returns one value per triple: the due time (ms, server clock), or -1 when this consumer no
-- longer owns that entry (nothing is written for it). What it schedules is counted as
-- `retried` in the tenant's stats bucket of the current minute, in the same step.
--
-- The schedule is written first: a retry adds data, so while Redis is over maxmemory it refuses
-- the whole script (nothing written, the entries stay pending for the settler to try again),
-- whereas a script whose first write is XACK would be let through. (Only the first write is
-- checked: the later ZADD chunks go through once the first has.)

-- `chunks` (batch writes in chunks of ids) comes from lib/chunks.lua, `recorded_steps` and
-- `fold_steps` from lib/steps.lua; the script registry prepends both.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, owned, zadd, steps = {}, {}, {}, {}
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p == 0 then
    out[#out + 1] = -1
  else
    local due = now + tonumber(ARGV[i + 1])
    local member = ARGV[i + 2]
    local key = KEYS[3 + (i - 1) / 3]
    local rec = recorded_steps(key)
    if rec then
      local ok, flat = pcall(cjson.decode, member)
      if ok and type(flat) == 'table' then
        -- Strings only (field names and values): nothing is rounded by the round trip.
        fold_steps(flat, rec)
        member = cjson.encode(flat)
        steps[#steps + 1] = key
      end
    end
    out[#out + 1] = due
    owned[#owned + 1] = id
    zadd[#zadd + 1] = due
    zadd[#zadd + 1] = member
  end
end
if #owned > 0 then
  chunks('ZADD', {KEYS[2]}, zadd, 2000)
  chunks('XACK', {KEYS[1], ARGV[1]}, owned, 1000)
  chunks('XDEL', {KEYS[1]}, owned, 1000)
  if #steps > 0 then
    chunks('DEL', {}, steps, 1000)
  end
  local bucket = KEYS[3] .. math.floor(tonumber(t[1]) / 60)
  if redis.call('HINCRBY', bucket, 'retried', #owned) == #owned then
    redis.call('PEXPIRE', bucket, ARGV[3])
  end
end
return out

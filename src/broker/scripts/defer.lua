-- defer.lua: entries of a tenant whose breaker is not closed leave their lane unattempted and
-- wait in the tenant's deferred set (owner check + ack + schedule + delete, one atomic step
-- for the batch; all keys share the tenant's tag). Unlike retry.lua the next attempt's fields
-- are the entry's own, read here: `attempt` is not raised, history is unchanged, so a deferral
-- is not an attempt. The deferred set is apart from the retry schedule so that closing the
-- breaker (breaker_set.lua, breaker_probe_done.lua) can make every held task due at once
-- while genuine retries keep their time. The recovery loop (promote.lua) puts them back when
-- due. A breaker already closed when this runs (the member's view was stale) holds nothing
-- back: the entries are due at once. Each moved task's record says `deferred` (not the end of
-- a run: the task did not start), in the same step.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the tenant's deferred set (ZSET scored by due time, ms)
-- KEYS[3]  the tenant's breaker (HASH; its `deferred` counter is raised)
-- KEYS[4]  the prefix of the tenant's task records ('redrive:{t}:task:'), or the tenant's
--          'redrive:{t}:records-off' when records are off (tasks.enabled = false): then no record is written
-- KEYS[5]  the tenant's record index (ZSET)
-- KEYS[6…] the steps hash of each pair's entry, in the order of the pairs (see step.lua): a
--          moved entry's records are folded into its member as 'recorded_steps' and the hash
--          is deleted with the entry (`recorded_steps` and `fold_steps` from lib/steps.lua,
--          `entry_task_id` from lib/task_id.lua, `owned` from lib/owned.lua and `rec_*` from
--          lib/record.lua, which the script registry prepends)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer that must own the entries (this member)
-- ARGV[3…] pairs: entry id in the lane, delay in ms (from the server's clock)
--
-- Each scheduled member is the entry's fields as a JSON array [field, value, …] without
-- `enqueued_at` (promote.lua stamps it), with `task_id` = 'x-<entry id>' when the entry had
-- none (so its identity survives the move), `first_enqueued_at` kept or taken from
-- `enqueued_at` (or the entry id's time), and `from_entry` = the entry id last (replacing an
-- earlier one), so that two entries of identical tasks never become one schedule member.
--
-- Returns one value per pair: the due time (ms, server clock); -1 when this consumer no longer
-- owns the entry (nothing written); -2 when the entry is gone (its pending id is acked, its
-- steps hash deleted). The record is named by the entry's task_id as the member reads it
-- (`entry_task_id`: none for an invalid one).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, done = {}, 0
local closed = (redis.call('HGET', KEYS[3], 'state') or 'closed') == 'closed'
local R = rec_ctx(KEYS[4], KEYS[5], nil)
local ids = {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
-- One ranged XPENDING for the batch (`owned`, lib/owned.lua), not one per pair.
local mine = owned(KEYS[1], ARGV[1], ARGV[2], ids)
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if not mine[id] then
    out[#out + 1] = -1
  else
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if #e == 0 then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('DEL', KEYS[6 + (i - 3) / 2])
      out[#out + 1] = -2
    else
      local f = e[1][2]
      local flat, has_id, first, enq = {}, false, false, nil
      for j = 1, #f, 2 do
        local k = f[j]
        if k == 'enqueued_at' then
          enq = f[j + 1]
        elseif k ~= 'from_entry' then
          if k == 'task_id' then
            has_id = true
          elseif k == 'first_enqueued_at' then
            first = true
          end
          flat[#flat + 1] = k
          flat[#flat + 1] = f[j + 1]
        end
      end
      if not has_id then
        flat[#flat + 1] = 'task_id'
        flat[#flat + 1] = 'x-' .. id
      end
      if not first then
        flat[#flat + 1] = 'first_enqueued_at'
        flat[#flat + 1] = enq or string.match(id, '^(%d+)') or string.format('%d', now)
      end
      local key = KEYS[6 + (i - 3) / 2]
      local rec = recorded_steps(key)
      if rec then
        fold_steps(flat, rec)
      end
      flat[#flat + 1] = 'from_entry'
      flat[#flat + 1] = id
      local due = now
      if not closed then
        due = now + tonumber(ARGV[i + 1])
      end
      redis.call('ZADD', KEYS[2], due, cjson.encode(flat))
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      if rec then
        redis.call('DEL', key)
      end
      if R then
        local tid = entry_task_id(f, id)
        if tid then
          rec_write(R, tid, now, 'deferred', {'due', string.format('%d', due)})
          -- Kept while in flight (a record given an expiry at enqueue).
          rec_expire(R, tid, 0)
        end
      end
      out[#out + 1] = due
      done = done + 1
    end
  end
end
if done > 0 then
  redis.call('HINCRBY', KEYS[3], 'deferred', done)
end
return out

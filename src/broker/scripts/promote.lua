-- promote.lua: due retries and due held-back (deferred) tasks go back into their lane (read +
-- append + remove, one atomic step, so any number of members may run it at once without
-- duplicating or losing an item). Each moved task's record says `queued` again, with its new
-- lane entry, in the same step.
--
-- KEYS[1]  the tenant's retry schedule (ZSET)
-- KEYS[2]  the tenant's lane stream
-- KEYS[3]  the tenant's deferred set (ZSET, same member format)
-- KEYS[4]  the prefix of the tenant's task records ('redrive:{t}:task:'), or the tenant's
--          'redrive:{t}:records-off' when records are off (tasks.enabled = false): then no record is written
-- KEYS[5]  the tenant's record index (ZSET)
-- ARGV[1]  the most items to move
--
-- Returns {moved, recorded, wait}: the number of items moved (retries first, then deferred
-- tasks; call again while it equals ARGV[1]), how many queued records were written, and how
-- long until the earliest item left in either set is due (ms by the server's clock; 0 when
-- the call moved ARGV[1] items, -1 when both sets are empty): the recovery loop looks again
-- then, not on every tick. Due means a
-- score at or below the server's clock. Each moved entry gets enqueued_at = now; its record
-- entry = the new lane id, enq = now and attempt = the item's (its task_id named as the member
-- will read it, `entry_task_id` from lib/task_id.lua; none for an invalid one). An item that is
-- not a JSON array of strings is appended as {unreadable_retry = item}, without a record: the
-- fleet then dead-letters it as malformed_entry instead of dropping it.
-- `rec_*` come from lib/record.lua, which the script registry prepends with lib/task_id.lua.
local R = rec_ctx(KEYS[4], KEYS[5], nil)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ts = string.format('%d', now)
local limit = tonumber(ARGV[1])
local moved, recorded = 0, 0
for _, set in ipairs({KEYS[1], KEYS[3]}) do
  if moved >= limit then
    break
  end
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit - moved)
  for _, item in ipairs(due) do
    local ok, fields = pcall(cjson.decode, item)
    if ok and type(fields) == 'table' and #fields > 0 and #fields % 2 == 0 then
      -- `recorded` says whether this script wrote the record with the entry (below): an earlier
      -- one (a deferred entry's own) does not count.
      local kept = {}
      for j = 1, #fields, 2 do
        if fields[j] ~= 'recorded' then
          kept[#kept + 1] = fields[j]
          kept[#kept + 1] = fields[j + 1]
        end
      end
      fields = kept
      -- Every schedule item carries its task_id (retry items and deferred entries do).
      local tid = R and entry_task_id(fields, '')
      if tid == 'x-' then
        tid = nil
      end
      fields[#fields + 1] = 'enqueued_at'
      fields[#fields + 1] = ts
      if tid then
        fields[#fields + 1] = 'recorded'
        fields[#fields + 1] = '1'
      end
      local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
      if R then
        if tid then
          local attempt = '1'
          for j = 1, #fields, 2 do
            if fields[j] == 'attempt' then
              attempt = fields[j + 1]
            end
          end
          rec_write(R, tid, now, 'queued', {'entry', id, 'enq', ts, 'attempt', attempt})
          recorded = recorded + 1
        end
      end
    else
      redis.call('XADD', KEYS[2], '*', 'unreadable_retry', item)
    end
    redis.call('ZREM', set, item)
  end
  moved = moved + #due
end
local wait = 0
if moved < limit then
  wait = -1
  for _, set in ipairs({KEYS[1], KEYS[3]}) do
    local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if #first == 2 then
      local w = math.max(0, math.floor(tonumber(first[2]) - now))
      if wait < 0 or w < wait then
        wait = w
      end
    end
  end
end
return {moved, recorded, wait}

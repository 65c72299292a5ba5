-- dlq_purge.lua: dead letters deleted for good (`dlq purge`, not archived) and their tasks'
-- records marked `discarded` (delete + record, one atomic step; every key shares the tenant's
-- hash tag). The caller reads the dead letters below the cutoff page by page and passes them
-- here; one gone in between (replayed, resolved) is skipped.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the prefix of the tenant's task records ('redrive:{t}:task:', lib/record.lua)
-- KEYS[3]  the tenant's record index (ZSET)
-- KEYS[4]  the tenant's task events stream
-- KEYS[5]  the tenant's dead-letter counts (lib/dlq_counts.lua, prepended by the registry): each
--          deleted dead letter is taken out
-- KEYS[6]  the tenant's review hash (lib/review.lua): each deleted dead letter's review ends
-- KEYS[7]  the tenant's folds (lib/review.lua): a deleted representative's fold dissolves
-- ARGV[1]  '1': write task records; '0': records are off (KEYS[2..4] are not touched)
-- ARGV[2…] per dead letter: its id, its task_id ('' for none: no record), its kind, and how
--          long the record is kept from now, ms (the tenant/kind's tasks.retention)
--
-- The record becomes `discarded` (ended = now, the dlq id kept), expires after the given
-- retention, and the events stream gets one entry. As in dlq_remove.lua only the record of
-- THIS dead letter is written (its `dlq` is the id, or it is missing and is created).
--
-- Returns {deleted, written}: how many dead letters were deleted and how many records were
-- written. `rec_*` come from lib/record.lua, `rv_*` from lib/review.lua.
if (#ARGV - 1) % 4 ~= 0 then
  return redis.error_reply('dlq_purge.lua: malformed arguments')
end
local R = nil
if ARGV[1] == '1' then
  R = rec_ctx(KEYS[2], KEYS[3], KEYS[4])
end
local now = rec_now()
local ts = string.format('%d', now)
local deleted, written = 0, 0
for i = 2, #ARGV, 4 do
  local id, task_id, kind, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if dlc_remove_entry(KEYS[5], KEYS[1], id) then
    redis.call('XDEL', KEYS[1], id)
    rv_forget(KEYS[6] or '', KEYS[7], id, nil)
    deleted = deleted + 1
    if R and task_id ~= '' then
      local old = redis.call('HMGET', R.prefix .. task_id, 'state', 'dlq')
      if not old[1] or old[2] == id then
        local pairs = {'ended', ts, 'dlq', id}
        if not old[1] then
          pairs[#pairs + 1] = 'kind'
          pairs[#pairs + 1] = kind
        end
        rec_write(R, task_id, now, 'discarded', pairs)
        rec_expire(R, task_id, ttl)
        rec_event(R, task_id, 'discarded', id)
        written = written + 1
      end
    end
  end
end
return {deleted, written}

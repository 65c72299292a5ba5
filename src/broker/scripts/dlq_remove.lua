-- dlq_remove.lua: resolved or discarded dead letters leave the dead-letter stream for the
-- tenant's stream of removed ones, stamped with who removed them, why, and by which command, and
-- their tasks' records say so (copy + delete + record, one atomic step; every key shares the
-- tenant's hash tag). The archiver moves them on to the archive after the grace period.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's stream of removed dead letters
-- KEYS[3]  the prefix of the tenant's task records ('redrive:{t}:task:', lib/record.lua)
-- KEYS[4]  the tenant's record index (ZSET)
-- KEYS[5]  the tenant's task events stream
-- KEYS[6]  the tenant's dead-letter counts (lib/dlq_counts.lua, prepended by the registry): each
--          removed dead letter is taken out
-- KEYS[7]  the tenant's counter of dead letters deleted without an archive
-- KEYS[8]  the tenant's review hash (lib/review.lua): each removed dead letter's review ends,
--          its record kept on the archived copy as `review`
-- KEYS[9]  the tenant's folds (lib/review.lua): a removed representative's fold dissolves
-- ARGV[1]  the hard ceiling of the stream of removed ones: past it plus a slack (a tenth, at
--          most 100) the oldest beyond it are deleted without an archive (only while the archive
--          has been unreachable that long), counted in KEYS[7] and returned
-- ARGV[2]  the action: 'resolved' or 'discarded' (also the record's new state)
-- ARGV[3]  the operator
-- ARGV[4]  the reason
-- ARGV[5]  the admin command id
-- ARGV[6]  '1': write task records; '0': records are off (KEYS[3..5] are not touched)
-- ARGV[7…] per dead letter: its id, its task_id ('' for none: no record), its kind, and how
--          long the record is kept from now, ms (the tenant/kind's tasks.retention)
--
-- The record becomes `resolved` / `discarded` (ended = now, the dlq id kept as the link to the
-- archived copy), expires after the given retention, and the events stream gets one entry.
-- Only the record of THIS dead letter is written: one whose `dlq` field is the dead-letter id,
-- or a missing one (created); a record of a later life of the same task_id is left alone.
--
-- Returns {removed, written, dropped}: the ids removed (ids already gone are left out, nothing
-- is written for them), how many records were written and how many removed ones the ceiling
-- deleted. `rec_*` come from lib/record.lua, `rv_*` from lib/review.lua.
if (#ARGV - 6) % 4 ~= 0 or (ARGV[2] ~= 'resolved' and ARGV[2] ~= 'discarded') then
  return redis.error_reply('dlq_remove.lua: malformed arguments')
end
local R = nil
if ARGV[6] == '1' then
  R = rec_ctx(KEYS[3], KEYS[4], KEYS[5])
end
local now = rec_now()
local ts = string.format('%d', now)
local removed = {}
local written = 0
for i = 7, #ARGV, 4 do
  local id, task_id, kind, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 1 then
    local f = e[1][2]
    dlc_remove(KEYS[6], id, dlc_fields(f))
    f[#f + 1] = 'dead_letter_id'
    f[#f + 1] = id
    f[#f + 1] = 'removed_action'
    f[#f + 1] = ARGV[2]
    f[#f + 1] = 'removed_by'
    f[#f + 1] = ARGV[3]
    f[#f + 1] = 'removed_reason'
    f[#f + 1] = ARGV[4]
    f[#f + 1] = 'removed_command'
    f[#f + 1] = ARGV[5]
    f[#f + 1] = 'removed_at'
    f[#f + 1] = ts
    local review = rv_forget(KEYS[8] or '', KEYS[9], id, rv_fingerprint(e[1][2]))
    if review then
      f[#f + 1] = 'review'
      f[#f + 1] = review
    end
    redis.call('XADD', KEYS[2], '*', unpack(f))
    redis.call('XDEL', KEYS[1], id)
    removed[#removed + 1] = id
    if R and task_id ~= '' then
      local old = redis.call('HMGET', R.prefix .. task_id, 'state', 'dlq')
      if not old[1] or old[2] == id then
        local pairs = {'ended', ts, 'dlq', id}
        if not old[1] then
          pairs[#pairs + 1] = 'kind'
          pairs[#pairs + 1] = kind
        end
        rec_write(R, task_id, now, ARGV[2], pairs)
        rec_expire(R, task_id, ttl)
        rec_event(R, task_id, ARGV[2], id)
        written = written + 1
      end
    end
  end
end
local dropped = 0
local ceiling = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[2])
if len > ceiling + math.min(100, math.ceil(ceiling / 10)) then
  local old = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', math.min(len - ceiling, 1000))
  dropped = #old
  redis.call('XTRIM', KEYS[2], 'MAXLEN', len - dropped)
  redis.call('INCRBY', KEYS[7], dropped)
end
return {removed, written, dropped}

-- replay.lua: dead letters go back into their lane as fresh tasks (delete from the dead-letter
-- stream + append to the lane + the task's record, one atomic step; the keys share the
-- tenant's hash tag). A dead letter that is already gone (replayed, resolved or purged by
-- someone else) is not re-added: that is what makes concurrent operators, resumed jobs and
-- re-executed commands replay each entry once.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's lane stream
-- KEYS[3]  the tenant's stats bucket of the current minute (HASH)
-- KEYS[4]  the prefix of the tenant's task records ('redrive:{t}:task:', lib/record.lua)
-- KEYS[5]  the tenant's record index (ZSET)
-- KEYS[6]  the tenant's dead-letter counts (lib/dlq_counts.lua): each replayed dead letter is
--          taken out
-- KEYS[7]  the tenant's review hash (lib/review.lua): each replayed dead letter's review ends
-- KEYS[8]  the tenant's folds (lib/review.lua): a replayed representative's fold dissolves
-- ARGV[1]  how long the stats bucket is kept, ms
-- ARGV[2]  '1': write task records; '0': records are off (tasks.enabled = false), KEYS[4] and
--          KEYS[5] are not touched
-- ARGV[3…] per entry: the dead-letter id, the task_id ('' for none: no record), the kind,
--          n (how many field and value strings follow), then those n strings (the replayed
--          task's fields)
--
-- The record: the task's record becomes `replayed` (entry and replayed_as = the new lane
-- entry, replay_of = the dead-letter id, replays + 1, attempt 1, enq = now, no dlq field, kept
-- without expiry until the task finishes again). Only the record of THIS dead letter is
-- written: one whose `dlq` field is the dead-letter id, or a missing one (a dead letter from
-- before records, or whose record expired), which is created. A record that belongs to a later
-- life of the same task_id (its dlq is another id or absent: ids reused with tasks.dedup off)
-- is left as it is.
--
-- Returns {ids, written}: ids per entry in order, the new lane entry id or '' when the dead
-- letter was gone; written, how many records were written. The argument list is checked whole
-- before anything is written. `rec_*` come from lib/record.lua, `dlc_*` from lib/dlq_counts.lua and
-- `rv_*` from lib/review.lua (prepended by the registry).
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  if not n or n < 2 or n % 2 ~= 0 or i + 3 + n > #ARGV then
    return redis.error_reply('replay.lua: malformed item at ARGV[' .. i .. ']')
  end
  i = i + 4 + n
end
local R = nil
if ARGV[2] == '1' then
  R = rec_ctx(KEYS[4], KEYS[5], nil)
end
local now = rec_now()
local ts = string.format('%d', now)
local out = {}
local replayed, written = 0, 0
i = 3
while i <= #ARGV do
  local dlq_id, task_id, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local n = tonumber(ARGV[i + 3])
  if dlc_remove_entry(KEYS[6], KEYS[1], dlq_id) then
    redis.call('XDEL', KEYS[1], dlq_id)
    rv_forget(KEYS[7] or '', KEYS[8], dlq_id, nil)
    local key = R and task_id ~= '' and (R.prefix .. task_id)
    local old = key and redis.call('HMGET', key, 'state', 'dlq', 'replays')
    local write = old and (not old[1] or old[2] == dlq_id)
    local args = {KEYS[2], '*'}
    for j = i + 4, i + 3 + n, 2 do
      if ARGV[j] ~= 'recorded' then
        args[#args + 1] = ARGV[j]
        args[#args + 1] = ARGV[j + 1]
      end
    end
    if write then
      -- The record is written with the entry: its start need not read it.
      args[#args + 1] = 'recorded'
      args[#args + 1] = '1'
    end
    local id = redis.call('XADD', unpack(args))
    out[#out + 1] = id
    replayed = replayed + 1
    if write then
      do
        local pairs = {
          'entry', id, 'replayed_as', id, 'replay_of', dlq_id,
          'replays', (tonumber(old[3]) or 0) + 1, 'attempt', 1, 'enq', ts,
        }
        if not old[1] then
          pairs[#pairs + 1] = 'kind'
          pairs[#pairs + 1] = kind
          pairs[#pairs + 1] = 'first'
          pairs[#pairs + 1] = ts
          pairs[#pairs + 1] = 'runs'
          pairs[#pairs + 1] = 0
        end
        rec_write(R, task_id, now, 'replayed', pairs)
        redis.call('HDEL', key, 'dlq')
        rec_expire(R, task_id, 0)
        written = written + 1
      end
    end
  else
    out[#out + 1] = ''
  end
  i = i + 4 + n
end
if replayed > 0 then
  redis.call('HINCRBY', KEYS[3], 'replayed', replayed)
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return {out, written}

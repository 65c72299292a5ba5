-- begin.lua: a taken-over entry starts running here: owner check + delivery (count + 1), the
-- steps recorded for it by earlier owners, and its task record (`running`, rec_start).
--
-- KEYS[1]  the lane stream (or the admin command stream)
-- KEYS[2]  optional: the entry's steps hash (lanes only; see step.lua)
-- KEYS[3]  optional (lanes only): the prefix of the tenant's task records
--          ('redrive:{t}:task:'), or 'redrive:{t}:records-off' when records are off (tasks.enabled = false)
-- KEYS[4]  optional, with KEYS[3]: the tenant's record index (ZSET)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the entry id
-- ARGV[4]  optional: '1' to refuse a task whose record is already `done` (tasks.dedup)
-- ARGV[5]  optional: the consumer the entry was pending for before it was claimed ('' when
--          unknown): the member of a run that died, for the record's history
--
-- Returns {0} when this consumer no longer owns the entry, {1} when the entry was deleted
-- (XCLAIM removed the tombstone from the PEL; its steps hash is deleted too), {3, task_id}
-- when its task's record is already `done` and ARGV[4] is '1' (a redelivery after a lost ack,
-- or a raw duplicate: the record is untouched, the member acks the entry without running it),
-- or {2, fields} when it may run. The task_id is the entry's `task_id` field, or 'x-<entry
-- id>' without one (`entry_task_id` from lib/task_id.lua); an invalid one gets no record (the
-- member dead-letters the entry as malformed). The fields carry the recorded steps as
-- 'recorded_steps' (a JSON array of the records in the order they were written, joined after
-- an existing 'recorded_steps' field; `recorded_steps` and `fold_steps` come from
-- lib/steps.lua, which the script registry prepends, as does lib/record.lua), so a member that
-- died after a step completed hands that step to the next attempt, and one that died inside a
-- side-effecting step leaves its started record for the next owner to see. The hash stays: the
-- next attempt records into it.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then
  return {0}
end
local r = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3])
if #r == 0 then
  if KEYS[2] then
    redis.call('DEL', KEYS[2])
  end
  return {1}
end
local fields = r[1][2]
local R = rec_ctx(KEYS[3], KEYS[4], nil)
if R then
  -- rec_start's refusal of a task done through the done log looks for its entry here.
  R.lane = KEYS[1]
end
if R then
  local tid = entry_task_id(fields, ARGV[3])
  if tid then
    local attempt, kind = '1', ''
    for j = 1, #fields, 2 do
      if fields[j] == 'attempt' then
        attempt = fields[j + 1]
      elseif fields[j] == 'kind' then
        kind = fields[j + 1]
      end
    end
    local refuse = ARGV[4] == '1'
    -- Delivered more than once before this start: an earlier start's member died (a fresh
    -- read counts 1, every start 1 more; see start.lua).
    local died = nil
    if tonumber(p[1][4]) >= 2 then
      died = ARGV[5] or ''
    end
    if rec_start(R, tid, rec_now(), ARGV[3], attempt, ARGV[2], kind, refuse, died) == 'done'
      and refuse then
      return {3, tid}
    end
  end
end
if KEYS[2] then
  local rec = recorded_steps(KEYS[2])
  if rec then
    fold_steps(fields, rec)
  end
end
return {2, fields}

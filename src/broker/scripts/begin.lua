-- begin.lua: a taken-over entry starts running here: owner check + delivery (count + 1), and
-- the steps recorded for it by earlier owners.
--
-- KEYS[1]  the lane stream (or the admin command stream)
-- KEYS[2]  optional: the entry's steps hash (lanes only; see step.lua)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the entry id
--
-- Returns {0} when this consumer no longer owns the entry, {1} when the entry was deleted
-- (XCLAIM removed the tombstone from the PEL; its steps hash is deleted too), or {2, fields}
-- when it may run. The fields carry the recorded steps as 'recorded_steps' (a JSON array of the
-- records in the order they were written, joined after an existing 'recorded_steps' field;
-- `recorded_steps` and `fold_steps` come from lib/steps.lua, which the script registry
-- prepends), so a member that died after a step completed hands that step to the next
-- attempt, and one that died inside a side-effecting step leaves its started record for the
-- next owner to see. The hash stays: the next attempt records into it.
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
if KEYS[2] then
  local rec = recorded_steps(KEYS[2])
  if rec then
    fold_steps(fields, rec)
  end
end
return {2, fields}

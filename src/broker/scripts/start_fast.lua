-- start_fast.lua: the start of fresh entries that no other consumer can have taken over yet
-- (read by this consumer within the fast window, see the settler's fast ack, so their
-- delivery count is still the read's 1): XCLAIM … RETRYCOUNT 2 JUSTID without start.lua's
-- owner check, and each started entry's task record says `running` (rec_begin), in the same
-- step: one round trip, as the plain XCLAIM it replaces.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the prefix of the tenant's task records ('redrive:{t}:task:'), or the tenant's
--          'redrive:{t}:records-off' when records are off (tasks.enabled = false): then only the XCLAIM runs
-- KEYS[3]  the tenant's record index (ZSET)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  '1': refuse a task whose record is already `done` (tasks.dedup, see start.lua)
-- ARGV[4…] quintuples, one per entry about to start: entry id, task_id, attempt, kind, '1'
--          when the entry carries `recorded` (its record was written with it: marked running
--          without a record write, see rec_begin) else '0'
--
-- Returns {started, gone, duplicates} as start.lua does: ids not claimed were deleted while
-- pending (`gone`); `duplicates` are claimed ids whose task is already done (not started).
-- `rec_ctx`, `rec_now` and `rec_begin` come from lib/record.lua, which the script registry
-- prepends.
local R = rec_ctx(KEYS[2], KEYS[3], nil)
if R then
  -- rec_start's refusal of a task done through the done log looks for its entry here.
  R.lane = KEYS[1]
end
local refuse = ARGV[3] == '1'
local at = {}
local started, gone, dups = {}, {}, {}
local now = R and rec_now()
-- In chunks of at most 1000 ids (Lua's unpack fails beyond a few thousand values).
for i = 4, #ARGV, 5000 do
  local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
  for j = i, math.min(i + 4999, #ARGV), 5 do
    args[#args + 1] = ARGV[j]
    at[ARGV[j]] = j
  end
  args[#args + 1] = 'RETRYCOUNT'
  args[#args + 1] = 2
  args[#args + 1] = 'JUSTID'
  local claimed = {}
  for _, id in ipairs(redis.call(unpack(args))) do
    claimed[id] = true
    local k = at[id]
    if rec_begin(R, now, ARGV[2], refuse, id, ARGV[k + 1], ARGV[k + 2], ARGV[k + 3], ARGV[k + 4]) then
      dups[#dups + 1] = id
    else
      started[#started + 1] = id
    end
  end
  for j = i, math.min(i + 4999, #ARGV), 5 do
    if not claimed[ARGV[j]] then
      gone[#gone + 1] = ARGV[j]
    end
  end
end
return {started, gone, dups}

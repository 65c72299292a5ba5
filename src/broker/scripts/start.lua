-- start.lua: entries read fresh start running here. Each one still pending for this consumer
-- gets its start recorded in the delivery count (count + 1), so the count means 1 + starts:
-- XREADGROUP set it to 1 at the read, whether or not the entry ever started; only a start
-- counts towards reclaim.max_deliveries. RETRYCOUNT sets the count even with JUSTID, which
-- keeps the reply short; the claim also resets the idle time (that only delays a reclaim).
-- Each started entry's task record says `running` (rec_begin), in the same step.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the prefix of the tenant's task records ('redrive:{t}:task:'), or the tenant's
--          'redrive:{t}:records-off' when records are off (tasks.enabled = false): then nothing but the start mark is written
-- KEYS[3]  the tenant's record index (ZSET)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the smallest of the ids
-- ARGV[4]  the largest of the ids
-- ARGV[5]  '1': refuse a task whose record is already `done` (tasks.dedup): such an entry is
--          not started (its record untouched) and is returned in `duplicates`; '0': run it
-- ARGV[6…] quintuples, one per entry about to start (one batch of the executor's starts):
--          entry id, task_id, attempt, kind, '1' when the entry carries `recorded` (its record
--          was written with it: nothing written at its start, see rec_begin) else '0'
--
-- Ownership is read with one XPENDING over [smallest, largest] filtered to this consumer
-- (paged by 1000), as in ack.lua.
--
-- Returns {started, gone, duplicates}: started lists the ids marked, which may run; gone lists
-- ids that were pending here but whose entry was deleted (XCLAIM dropped them from the PEL);
-- duplicates lists ids whose task is already done (their delivery count was raised, nothing
-- else written): the member acks them without running them. Ids in none of the lists are no
-- longer pending for this consumer (reclaimed or settled elsewhere): they must not run.
-- `rec_ctx`, `rec_now` and `rec_begin` come from lib/record.lua, which the script registry
-- prepends.
local R = rec_ctx(KEYS[2], KEYS[3], nil)
if R then
  -- rec_start's refusal of a task done through the done log looks for its entry here.
  R.lane = KEYS[1]
end
local refuse = ARGV[5] == '1'
local count = {}
local start = ARGV[3]
while true do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], start, ARGV[4], 1000, ARGV[2])
  for _, e in ipairs(p) do
    count[e[1]] = tonumber(e[4])
  end
  if #p < 1000 then
    break
  end
  start = '(' .. p[#p][1]
end
-- Owned ids grouped by their current count (almost always 1: read, never started), in order;
-- `at` keeps each id's position in ARGV for its record.
local groups, order, at = {}, {}, {}
for i = 6, #ARGV, 5 do
  local id = ARGV[i]
  local n = count[id]
  if n then
    at[id] = i
    if not groups[n] then
      groups[n] = {}
      order[#order + 1] = n
    end
    local g = groups[n]
    g[#g + 1] = id
  end
end
local started, gone, dups = {}, {}, {}
local now = R and rec_now()
for _, n in ipairs(order) do
  local ids, claimed = groups[n], {}
  -- In chunks of at most 1000 ids (Lua's unpack fails beyond a few thousand values).
  for i = 1, #ids, 1000 do
    local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
    for j = i, math.min(i + 999, #ids) do
      args[#args + 1] = ids[j]
    end
    args[#args + 1] = 'RETRYCOUNT'
    args[#args + 1] = n + 1
    args[#args + 1] = 'JUSTID'
    for _, id in ipairs(redis.call(unpack(args))) do
      claimed[id] = true
      local k = at[id]
      if rec_begin(R, now, ARGV[2], refuse, id, ARGV[k + 1], ARGV[k + 2], ARGV[k + 3], ARGV[k + 4]) then
        dups[#dups + 1] = id
      else
        started[#started + 1] = id
      end
    end
  end
  for _, id in ipairs(ids) do
    if not claimed[id] then
      gone[#gone + 1] = id
    end
  end
end
return {started, gone, dups}

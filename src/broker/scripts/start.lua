-- start.lua: entries read fresh start running here. Each one still pending for this consumer
-- gets its start recorded in the delivery count (count + 1), so the count means 1 + starts:
-- XREADGROUP set it to 1 at the read, whether or not the entry ever started; only a start
-- counts towards reclaim.max_deliveries. RETRYCOUNT sets the count even with JUSTID, which
-- keeps the reply short; the claim also resets the idle time (that only delays a reclaim).
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the smallest of the ids
-- ARGV[4]  the largest of the ids
-- ARGV[5…] entry ids about to start (one batch of the executor's starts)
--
-- Ownership is read with one XPENDING over [smallest, largest] filtered to this consumer
-- (paged by 1000), as in ack.lua.
--
-- Returns {started, gone}: started lists the ids marked, which may run; gone lists ids that
-- were pending here but whose entry was deleted (XCLAIM dropped them from the PEL). Ids in
-- neither list are no longer pending for this consumer (reclaimed or settled elsewhere): they
-- must not run.
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
-- Owned ids grouped by their current count (almost always 1: read, never started), in order.
local groups, order = {}, {}
for i = 5, #ARGV do
  local n = count[ARGV[i]]
  if n then
    if not groups[n] then
      groups[n] = {}
      order[#order + 1] = n
    end
    local g = groups[n]
    g[#g + 1] = ARGV[i]
  end
end
local started, gone = {}, {}
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
      started[#started + 1] = id
    end
  end
  for _, id in ipairs(ids) do
    if not claimed[id] then
      gone[#gone + 1] = id
    end
  end
end
return {started, gone}

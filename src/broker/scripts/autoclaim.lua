-- autoclaim.lua: one step of a reclaim scan. Entries pending longer than the idle time at any
-- consumer (crashed or stuck members) are taken over: XPENDING … IDLE finds them with their
-- consumer and delivery count, XCLAIM … JUSTID takes them (the same idle time, so an entry a
-- live owner refreshed meanwhile stays its own). Entries at or past the poison threshold are
-- reported as poison instead of being handed out again. JUSTID keeps the delivery count
-- unchanged here: begin.lua raises it when an entry actually starts, so a crash only counts
-- against the entry that was running.
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the claiming consumer (this member)
-- ARGV[3]  the least idle time, ms
-- ARGV[4]  the scan cursor ('0-0' starts over; else the `next` of the previous step)
-- ARGV[5]  the most pending entries to take in this step
-- ARGV[6]  the poison threshold on the delivery count (on a lane, 1 + the most starts: see start.lua)
-- ARGV[7…] ids to leave alone (entries the claimer already has in flight)
--
-- Returns {next, claimed, poison, tombstones, owners}: next is the cursor of the following
-- step, or '' when the scan went round; claimed is a flat list id, deliveries, … of entries
-- now owned by the claimer and ready to run; poison is a flat list id, deliveries, … of
-- entries at or past the threshold, now owned by the claimer (idle reset, so no other member
-- takes them while they are dead-lettered); tombstones is how many pending ids had lost their
-- entry (XCLAIM removed them from the PEL, Redis 7+); owners is a flat list id, consumer, … of
-- whom each claimed entry was pending for (the member whose run of it died, for its record).
local start = ARGV[4]
if start == '0-0' or start == '' then
  start = '-'
end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], start, '+', ARGV[5])
local skip = {}
for i = 7, #ARGV do
  skip[ARGV[i]] = true
end
local ids, seen = {}, {}
for _, e in ipairs(p) do
  if not skip[e[1]] then
    ids[#ids + 1] = e[1]
    seen[e[1]] = e
  end
end
local claimed, poison, owners = {}, {}, {}
local tombstones = 0
-- In chunks of at most 1000 ids (Lua's unpack fails beyond a few thousand values).
for i = 1, #ids, 1000 do
  local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3]}
  for j = i, math.min(i + 999, #ids) do
    args[#args + 1] = ids[j]
  end
  args[#args + 1] = 'JUSTID'
  local got = {}
  for _, id in ipairs(redis.call(unpack(args))) do
    got[id] = true
  end
  for j = i, math.min(i + 999, #ids) do
    local id = ids[j]
    if got[id] then
      local e = seen[id]
      local n = tonumber(e[4])
      if n >= tonumber(ARGV[6]) then
        poison[#poison + 1] = id
        poison[#poison + 1] = tostring(n)
      else
        claimed[#claimed + 1] = id
        claimed[#claimed + 1] = tostring(n)
        owners[#owners + 1] = id
        owners[#owners + 1] = e[2]
      end
    else
      -- Pending, but its entry is gone: XCLAIM dropped it from the PEL.
      tombstones = tombstones + 1
    end
  end
end
local next = ''
if #p >= tonumber(ARGV[5]) then
  next = '(' .. p[#p][1]
end
return {next, claimed, poison, tombstones, owners}

-- claim.lua: one step of a member's drain of its own pending entries (after a restart or a
-- read error): they are taken over again by the same consumer, except those delivered too
-- often, which are reported as poison instead of being handed out again. The takeover uses
-- JUSTID, so the delivery count is not raised here: begin.lua raises it when the entry
-- actually starts, so a crash only counts against the entry that was running. (Stale entries
-- of other members are reclaimed by autoclaim.lua.)
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  where the scan starts: '-' or an exclusive '(<id>'
-- ARGV[4]  the most pending entries to examine
-- ARGV[5]  the poison threshold on the delivery count (on a lane, 1 + the most starts: see start.lua)
-- ARGV[6…] ids to leave alone (entries the member already has in flight)
--
-- Returns {next, claimed, poison, tombstones}: next is the start of the following step, or ''
-- when the scan is complete; claimed is a flat list id, deliveries, … of entries to run;
-- poison is a flat list id, deliveries, … of entries at or past the threshold (left pending,
-- untouched); tombstones is how many ids were pending but had lost their entry (XCLAIM
-- removed them from the PEL).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], '+', ARGV[4], ARGV[2])
local skip = {}
for i = 6, #ARGV do
  skip[ARGV[i]] = true
end
local ids, poison, count = {}, {}, {}
for _, e in ipairs(p) do
  if skip[e[1]] then
    -- in flight: neither claimed nor judged
  elseif tonumber(e[4]) >= tonumber(ARGV[5]) then
    poison[#poison + 1] = e[1]
    poison[#poison + 1] = tostring(e[4])
  else
    ids[#ids + 1] = e[1]
    count[e[1]] = e[4]
  end
end
local claimed, n = {}, 0
-- In chunks of at most 1000 ids (Lua's unpack fails beyond a few thousand values).
for i = 1, #ids, 1000 do
  local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
  for j = i, math.min(i + 999, #ids) do
    args[#args + 1] = ids[j]
  end
  args[#args + 1] = 'JUSTID'
  for _, id in ipairs(redis.call(unpack(args))) do
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = tostring(count[id])
    n = n + 1
  end
end
local next = ''
if #p >= tonumber(ARGV[4]) then
  next = '(' .. p[#p][1]
end
return {next, claimed, poison, #ids - n}

-- autoclaim.lua: one step of a reclaim scan. XAUTOCLAIM takes over entries pending longer
-- than the idle time at any consumer (crashed or stuck members); each one's delivery count is
-- then read from the PEL, and entries at or past the poison threshold are reported as poison
-- instead of being handed out again. JUSTID keeps the delivery count unchanged here:
-- begin.lua raises it when an entry actually starts, so a crash only counts against the entry
-- that was running.
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the claiming consumer (this member)
-- ARGV[3]  the least idle time, ms
-- ARGV[4]  the scan cursor ('0-0' starts over)
-- ARGV[5]  the most pending entries to examine
-- ARGV[6]  the poison threshold on the delivery count (on a lane, 1 + the most starts: see start.lua)
-- ARGV[7…] ids to leave alone (entries the claimer already has in flight)
--
-- Returns {next, claimed, poison, tombstones}: next is the cursor of the following step, or ''
-- when the scan went round; claimed is a flat list id, deliveries, … of entries now owned by
-- the claimer and ready to run; poison is a flat list id, deliveries, … of entries at or past
-- the threshold, now owned by the claimer (idle reset, so no other member takes them while
-- they are dead-lettered); tombstones is how many pending ids had lost their entry
-- (XAUTOCLAIM removed them from the PEL, Redis 7+).
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  'COUNT', ARGV[5], 'JUSTID')
local skip = {}
for i = 7, #ARGV do
  skip[ARGV[i]] = true
end
local claimed, poison = {}, {}
for _, id in ipairs(r[2]) do
  if not skip[id] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    if #p > 0 then
      local n = tonumber(p[1][4])
      if n >= tonumber(ARGV[6]) then
        poison[#poison + 1] = id
        poison[#poison + 1] = tostring(n)
      else
        claimed[#claimed + 1] = id
        claimed[#claimed + 1] = tostring(n)
      end
    end
  end
end
local next = r[1]
if next == '0-0' then
  next = ''
end
local tombstones = 0
if r[3] then
  tombstones = #r[3]
end
return {next, claimed, poison, tombstones}

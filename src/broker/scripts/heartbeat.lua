-- heartbeat.lua: a member keeps its entries fresh so a reclaimer never takes a live task; at
-- the same time it learns which entries it has lost.
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3…] entry ids this member holds
--
-- Returns {taken, gone}: taken lists the ids now pending for another consumer (reclaimed:
-- lost for sure); gone lists the ids pending for nobody (settled: by this member's own settle
-- racing this beat, or by another member after a reclaim; the member tells them apart). The
-- owned ones get their idle time reset by XCLAIM … JUSTID, which leaves the delivery count
-- alone.
local taken, gone = {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 then
    gone[#gone + 1] = ARGV[i]
  elseif p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    taken[#taken + 1] = ARGV[i]
  end
end
return {taken, gone}

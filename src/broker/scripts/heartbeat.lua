-- heartbeat.lua: a member keeps its entries fresh so a reclaimer never takes a live task; at
-- the same time it learns which entries it has lost.
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3…] entry ids this member holds
--
-- Returns the ids this consumer no longer owns (reclaimed or settled elsewhere). The owned
-- ones get their idle time reset by XCLAIM … JUSTID, which leaves the delivery count alone.
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost

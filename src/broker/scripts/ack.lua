-- ack.lua: completed entries leave their lane (ack + delete, one atomic step), but only those
-- this consumer still owns: a member that lost an entry to a reclaim must not settle it.
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3…] entry ids (at most fleet.ack_batch)
--
-- Returns the number of ids acked and deleted. The others were not pending for this consumer:
-- settled already, or reclaimed by another member, who now owns them.
local owned = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    owned[#owned + 1] = ARGV[i]
  end
end
if #owned == 0 then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(owned))
redis.call('XDEL', KEYS[1], unpack(owned))
return #owned

-- ack.lua: completed entries leave their lane (ack + delete, one atomic step), but only those
-- this consumer still owns: a member that lost an entry to a reclaim must not settle it.
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the smallest of the ids
-- ARGV[4]  the largest of the ids
-- ARGV[5…] entry ids (at most fleet.ack_batch)
--
-- Ownership is read with one XPENDING over [smallest, largest] filtered to this consumer
-- (paged by 1000), instead of one call per id: the consumer's PEL is bounded by its unsettled
-- limit, so the range holds few entries besides the batch.
--
-- Returns the number of ids acked and deleted. The others were not pending for this consumer:
-- settled already, or reclaimed by another member, who now owns them.
local mine = {}
local start = ARGV[3]
while true do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], start, ARGV[4], 1000, ARGV[2])
  for _, e in ipairs(p) do
    mine[e[1]] = true
  end
  if #p < 1000 then
    break
  end
  start = '(' .. p[#p][1]
end
local owned = {}
for i = 5, #ARGV do
  if mine[ARGV[i]] then
    owned[#owned + 1] = ARGV[i]
  end
end
if #owned == 0 then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(owned))
redis.call('XDEL', KEYS[1], unpack(owned))
return #owned

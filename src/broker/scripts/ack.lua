-- ack.lua: completed entries leave their lane (ack + delete, one atomic step).
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2…] entry ids (at most fleet.ack_batch)
--
-- Returns the number of ids that were still pending in the group (XACK's count). Fewer than
-- given means another member already settled some of them. The entries are deleted either way,
-- so lanes never keep settled work; deleting after the ack never leaves a tombstone in the PEL.
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return acked

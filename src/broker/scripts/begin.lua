-- begin.lua: a taken-over entry starts running here: owner check + delivery (count + 1).
--
-- KEYS[1]  the lane stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the entry id
--
-- Returns {0} when this consumer no longer owns the entry, {1} when the entry was deleted
-- (XCLAIM removed the tombstone from the PEL), or {2, fields} when it may run.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then
  return {0}
end
local r = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3])
if #r == 0 then
  return {1}
end
return {2, r[1][2]}

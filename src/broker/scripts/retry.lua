-- retry.lua: a failed attempt leaves its lane and is scheduled for its next attempt
-- (owner check + ack + schedule + delete, one atomic step; both keys share the tenant's tag).
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the tenant's retry schedule (ZSET scored by due time, ms)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer that must own the entry (this member)
-- ARGV[3]  the entry id in the lane
-- ARGV[4]  the delay, ms, counted from the server's clock
-- ARGV[5]  the schedule member: a JSON array [field, value, …] of the next attempt, unique
--          because it holds task_id and attempt
--
-- Returns the due time (ms, server clock), or -1 when this consumer no longer owns the entry
-- (nothing is written).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then
  return -1
end
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], due, ARGV[5])
redis.call('XDEL', KEYS[1], ARGV[3])
return due

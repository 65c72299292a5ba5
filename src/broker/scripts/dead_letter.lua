-- dead_letter.lua: an entry moves from its lane to its tenant's dead-letter stream
-- (ack + append + delete, one atomic step; all keys share the tenant's hash tag).
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the tenant's dead-letter stream
-- KEYS[3]  the tenant's counter of dead letters trimmed by the cap
-- ARGV[1]  the consumer group
-- ARGV[2]  the entry id in the lane
-- ARGV[3]  the dead-letter stream's approximate cap (MAXLEN ~)
-- ARGV[4…] field, value, field, value … of the dead letter
--
-- Returns {1, dead-letter id, trimmed} when moved, where trimmed counts older dead letters
-- the cap removed (also added to KEYS[3]), or {0, '', 0} when the entry was no longer
-- pending: another member settled it first, and nothing is written.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return {0, '', 0}
end
local before = redis.call('XLEN', KEYS[2])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
local trimmed = before + 1 - redis.call('XLEN', KEYS[2])
if trimmed > 0 then
  redis.call('INCRBY', KEYS[3], trimmed)
end
redis.call('XDEL', KEYS[1], ARGV[2])
return {1, id, trimmed}

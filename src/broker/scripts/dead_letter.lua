-- dead_letter.lua: an entry moves from its lane to its tenant's dead-letter stream
-- (check + append + ack + delete + count, one atomic step; all keys share the tenant's hash
-- tag).
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the tenant's dead-letter stream
-- KEYS[3]  the tenant's counter of dead letters trimmed by the cap
-- KEYS[4]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- KEYS[5]  the entry's steps hash (see step.lua): its records are added to the dead letter as
--          'recorded_steps' (`recorded_steps` from lib/steps.lua, which the script registry
--          prepends) and the hash is deleted with the entry
-- ARGV[1]  the consumer group
-- ARGV[2]  the entry id in the lane
-- ARGV[3]  the dead-letter stream's approximate cap (MAXLEN ~)
-- ARGV[4]  the consumer that must own the entry, or '' for any owner (reclaim of a crash loop)
-- ARGV[5]  the least idle time (ms) the entry must have, 0 for none (so a live owner's fresh
--          heartbeat wins over a reclaimer's decision)
-- ARGV[6]  how long a stats bucket is kept, ms
-- ARGV[7…] field, value, field, value … of the dead letter
--
-- Returns {1, dead-letter id, trimmed} when moved (trimmed: older dead letters the cap removed,
-- also added to KEYS[3]); {0, '', 0} when the entry is no longer pending for that owner, or
-- too fresh: nothing is written. The dead letter gets a `deliveries` field from the PEL: how
-- many times the entry started (its delivery count minus the read, see start.lua).
--
-- The dead letter is written first: it adds data, so while Redis is over maxmemory it refuses
-- the whole script (nothing written, the entry stays pending for the settler to try again),
-- whereas a script whose first write is XACK would be let through.
local p
if ARGV[4] == '' then
  p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
else
  p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[4])
end
if #p == 0 or tonumber(p[1][3]) < tonumber(ARGV[5]) then
  return {0, '', 0}
end
local fields = {'deliveries', math.max(tonumber(p[1][4]) - 1, 0)}
for i = 7, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local rec = recorded_steps(KEYS[5])
if rec then
  fields[#fields + 1] = 'recorded_steps'
  fields[#fields + 1] = rec
end
local before = redis.call('XLEN', KEYS[2])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local trimmed = before + 1 - redis.call('XLEN', KEYS[2])
if trimmed > 0 then
  redis.call('INCRBY', KEYS[3], trimmed)
end
redis.call('XDEL', KEYS[1], ARGV[2])
if rec then
  redis.call('DEL', KEYS[5])
end
local t = redis.call('TIME')
local bucket = KEYS[4] .. math.floor(tonumber(t[1]) / 60)
if redis.call('HINCRBY', bucket, 'dead_lettered', 1) == 1 then
  redis.call('PEXPIRE', bucket, ARGV[6])
end
return {1, id, trimmed}

-- step.lua: records step checkpoints of a running attempt (PROTOCOL.md, "Steps and
-- checkpoints") in its lane entry's steps hash, fenced: only while this consumer owns the entry
-- in the group's PEL (the owner check of start.lua), so a member that lost the entry to a
-- reclaim cannot write over the new owner's steps, and nothing lands once the entry is settled.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the entry's steps hash (redrive:{t}:steps:<entry id>, the lane's hash tag)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the entry id
-- ARGV[4…] triples, applied in order: op, step name, step JSON (a serialised Step). op 'd': the
--          step completed (its record replaces any earlier one of the name); 's': a
--          side-effecting step started (its record has "done":false); 'f': a started step
--          ended without its side effect — its started record is removed (a done one is kept;
--          the JSON is '')
--
-- The hash: one field per step name, value '<seq>:<state>:<step JSON>', seq from the counter in
-- the field '' (HINCRBY per record, so the order records were written in survives replacements
-- and removals), state 'd' or 's' (see lib/steps.lua, which reads it back). When only the
-- counter is left, the hash is deleted. The scripts that move the entry out of its lane fold the
-- records into what they write (retry.lua, dead_letter.lua, defer.lua) or delete the hash
-- (ack.lua, fast_ack.lua); begin.lua returns them with a taken-over entry's fields.
--
-- Returns the number of ops applied, or -1 when this consumer no longer owns the entry
-- (nothing is written).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then
  return -1
end
local n = 0
for i = 4, #ARGV, 3 do
  local op, name = ARGV[i], ARGV[i + 1]
  if op == 'f' then
    local cur = redis.call('HGET', KEYS[2], name)
    if cur and string.match(cur, '^%d+:s:') then
      redis.call('HDEL', KEYS[2], name)
    end
  else
    local seq = redis.call('HINCRBY', KEYS[2], '', 1)
    redis.call('HSET', KEYS[2], name, seq .. ':' .. op .. ':' .. ARGV[i + 2])
  end
  n = n + 1
end
if redis.call('HLEN', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[2])
end
return n

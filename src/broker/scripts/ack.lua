-- ack.lua: completed entries leave their lane (ack + delete, one atomic step), but only those
-- this consumer still owns: a member that lost an entry to a reclaim must not settle it. What
-- it acks is counted in the tenant's stats bucket of the current minute, in the same step.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer (this member)
-- ARGV[3]  the smallest of the ids
-- ARGV[4]  the largest of the ids
-- ARGV[5]  how long a stats bucket is kept, ms
-- ARGV[6]  how many of the ids (the first ones) completed after an earlier failure or a replay
-- ARGV[7]  n: how many of the ids may have recorded steps (see step.lua)
-- ARGV[8…7+n] those ids; KEYS[2+i] is the steps hash of ARGV[7+i], deleted when the id is acked
-- ARGV[8+n…] entry ids (at most fleet.ack_batch)
--
-- Ownership is read with one XPENDING over [smallest, largest] filtered to this consumer
-- (paged by 1000), instead of one call per id: the consumer's PEL is bounded by its unsettled
-- limit, so the range holds few entries besides the batch.
--
-- Returns the number of ids acked and deleted. The others were not pending for this consumer:
-- settled already, or reclaimed by another member, who now owns them.
-- `chunks` (batch writes in chunks of ids) comes from lib/chunks.lua, which the script
-- registry prepends.
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
local owned, recovered = {}, 0
local r = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local first = 8 + n
for i = first, #ARGV do
  if mine[ARGV[i]] then
    owned[#owned + 1] = ARGV[i]
    if i < first + r then
      recovered = recovered + 1
    end
  end
end
if #owned == 0 then
  return 0
end
-- XACK first: it frees memory, so Redis runs the script even while over maxmemory, and the
-- stats HINCRBY after it cannot be refused on its own.
chunks('XACK', {KEYS[1], ARGV[1]}, owned, 1000)
chunks('XDEL', {KEYS[1]}, owned, 1000)
local steps = {}
for i = 1, n do
  if mine[ARGV[7 + i]] then
    steps[#steps + 1] = KEYS[2 + i]
  end
end
if #steps > 0 then
  chunks('DEL', {}, steps, 1000)
end
local t = redis.call('TIME')
local bucket = KEYS[2] .. math.floor(tonumber(t[1]) / 60)
if redis.call('HINCRBY', bucket, 'completed', #owned) == #owned then
  redis.call('PEXPIRE', bucket, ARGV[5])
end
if recovered > 0 then
  redis.call('HINCRBY', bucket, 'recovered', recovered)
end
return #owned

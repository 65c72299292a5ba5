-- fast_ack.lua: completed entries that no other consumer can have taken over yet (see the
-- settler's fast-ack window) leave their lane: ack + delete, one atomic step, without
-- ack.lua's owner check, and counted in the tenant's stats bucket of the current minute.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- ARGV[1]  the consumer group
-- ARGV[2]  how long a stats bucket is kept, ms
-- ARGV[3]  how many of the ids (the first ones) completed after an earlier failure or a replay
-- ARGV[4]  n: how many steps hashes follow in KEYS[3…2+n] (see step.lua): those of the ids that
--          may have recorded steps, deleted with them (nobody else can own these entries)
-- ARGV[5…] entry ids (at most fleet.ack_batch)
--
-- Why a script and not MULTI: while Redis is over maxmemory it refuses to queue any command
-- inside MULTI, so a MULTI of XACK + XDEL fails as a whole. XACK and XDEL free memory and are
-- not refused; a script is refused only when a command that may grow memory comes before its
-- first write, so the stats HINCRBY goes last.
--
-- Returns the number of ids acked (the others were no longer pending: settled already).
-- `chunks` (batch writes in chunks of ids) comes from lib/chunks.lua, which the script
-- registry prepends.
local r = tonumber(ARGV[3])
local first, rest = {}, {}
for i = 5, #ARGV do
  if i < 5 + r then
    first[#first + 1] = ARGV[i]
  else
    rest[#rest + 1] = ARGV[i]
  end
end
local recovered = chunks('XACK', {KEYS[1], ARGV[1]}, first, 1000)
local acked = chunks('XACK', {KEYS[1], ARGV[1]}, rest, 1000) + recovered
chunks('XDEL', {KEYS[1]}, first, 1000)
chunks('XDEL', {KEYS[1]}, rest, 1000)
local steps = {}
for i = 1, tonumber(ARGV[4]) do
  steps[#steps + 1] = KEYS[2 + i]
end
if #steps > 0 then
  chunks('DEL', {}, steps, 1000)
end
if acked > 0 then
  local t = redis.call('TIME')
  local bucket = KEYS[2] .. math.floor(tonumber(t[1]) / 60)
  if redis.call('HINCRBY', bucket, 'completed', acked) == acked then
    redis.call('PEXPIRE', bucket, ARGV[2])
  end
  if recovered > 0 then
    redis.call('HINCRBY', bucket, 'recovered', recovered)
  end
end
return acked

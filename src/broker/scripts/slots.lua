-- slots.lua: a member's reservation of a tenant's fleet-wide in-flight slots. The member says
-- how many of the tenant's entries it holds (read, not settled) and how many more it wants;
-- it gets at most what the cap leaves after every other live member's reservation. A
-- reservation lasts `ttl` unless renewed, so a crashed member's slots come back on their own.
-- The same call with `wanted` = 0 reports and renews (members do it every refresh).
--
-- KEYS[1]  the tenant's reservations (HASH: <member> = '<count> <expiry ms>', '@peak' = the
--          highest fleet-wide total ever reserved)
-- ARGV[1]  the member
-- ARGV[2]  entries it holds now (kept even above the cap: they are already read)
-- ARGV[3]  entries it wants to read more
-- ARGV[4]  the tenant's cap, 0 for none
-- ARGV[5]  the reservation's time to live, ms
--
-- Returns {granted, total}: how many more it may read, and the fleet-wide total reserved
-- after the call.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local flat = redis.call('HGETALL', KEYS[1])
local others, expired, peak = 0, {}, 0
for i = 1, #flat, 2 do
  local k, v = flat[i], flat[i + 1]
  if k == '@peak' then
    peak = tonumber(v) or 0
  elseif k ~= ARGV[1] then
    local c, e = string.match(v, '^(%d+) (%d+)$')
    if c == nil or tonumber(e) < now then
      expired[#expired + 1] = k
    else
      others = others + tonumber(c)
    end
  end
end
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
end
local held, wanted, cap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local granted = wanted
if cap > 0 then
  granted = math.max(0, math.min(wanted, cap - others - held))
end
local mine = held + granted
local ttl = tonumber(ARGV[5])
if mine > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %d', mine, now + ttl))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local total = others + mine
if total > peak then
  redis.call('HSET', KEYS[1], '@peak', total)
end
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl * 10)
end
return {granted, total}

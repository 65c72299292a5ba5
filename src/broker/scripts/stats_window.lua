-- stats_window.lua: the sums of a tenant's per-minute settle counts over a window, added up on
-- the server so a window of many minutes is one call, not one read per minute. Read-only.
--
-- KEYS[1]  the prefix of the tenant's per-minute stats buckets ('redrive:{t}:stats:'); the
--          script appends each minute (same hash tag, so the same slot, like the settle
--          scripts that write them)
-- ARGV[1]  the first minute (minutes since the epoch, server clock)
-- ARGV[2]  the last minute, inclusive (at most 1,441 minutes after the first)
--
-- Returns flat name, sum, name, sum, … of every count seen in the window.
local from, to = tonumber(ARGV[1]), tonumber(ARGV[2])
if not from or not to or to < from or to - from > 1441 then
  return redis.error_reply('stats_window.lua: a window is 1 to 1,442 minutes')
end
local sums, order = {}, {}
for m = from, to do
  local h = redis.call('HGETALL', KEYS[1] .. m)
  for i = 1, #h, 2 do
    local name = h[i]
    if not sums[name] then
      sums[name] = 0
      order[#order + 1] = name
    end
    sums[name] = sums[name] + (tonumber(h[i + 1]) or 0)
  end
end
local out = {}
for _, name in ipairs(order) do
  out[#out + 1] = name
  out[#out + 1] = sums[name]
end
return out

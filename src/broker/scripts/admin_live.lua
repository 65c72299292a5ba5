-- admin_live.lua: which fleet members' admin loops have beaten recently (by the server's
-- clock, so the CLI's own clock does not matter). Read-only.
--
-- KEYS[1]  the live-members set (ZSET scored by last beat, server ms)
-- ARGV[1]  the oldest beat that still counts, as an age in ms
--
-- Returns the live members' ids.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')

-- dlq_counts.lua: one step of the upkeep of a tenant's dead-letter counts (lib/dlq_counts.lua,
-- prepended by the registry). When the counts are whole and agree with the stream it only
-- checks; when they are missing (dead letters older than the counts) or disagree ('n' is not
-- XLEN: someone changed the stream by hand) it starts a rebuild; while rebuilding it counts the
-- next page. Any number of members may run it at once: each step is atomic and moves the same
-- rebuild on.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's dead-letter counts
-- ARGV[1]  entries one rebuild step counts at most
--
-- Returns {state, counted}: state 'ok' (whole and in agreement; nothing written), 'started'
-- (a rebuild began, and its first page was counted), 'rebuilding' (a page was counted) or
-- 'complete' (the rebuild's last page was counted); counted is how many entries this step
-- counted.
local page_size = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[2], 'n', 'rebuild_to', 'rebuilt')
local state = 'rebuilding'
if not r[2] then
  local len = redis.call('XLEN', KEYS[1])
  if r[1] and tonumber(r[1]) == len then
    return {'ok', 0}
  end
  redis.call('DEL', KEYS[2])
  if len == 0 then
    redis.call('HSET', KEYS[2], 'n', 0)
    return {'complete', 0}
  end
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  redis.call('HSET', KEYS[2], 'n', 0, 'rebuild_to', last[1][1], 'rebuilt', '0-0')
  r = {'0', last[1][1], '0-0'}
  state = 'started'
end
local page = redis.call('XRANGE', KEYS[1], '(' .. r[3], r[2], 'COUNT', page_size)
for _, e in ipairs(page) do
  local f = dlc_fields(e[2])
  local g, fp = dlc_group(f)
  redis.call('HINCRBY', KEYS[2], 'n', 1)
  redis.call('HINCRBY', KEYS[2], g, 1)
  redis.call('HSETNX', KEYS[2], 's:' .. fp, f['error'] or '')
end
if #page < page_size then
  redis.call('HDEL', KEYS[2], 'rebuild_to', 'rebuilt')
  return {'complete', #page}
end
redis.call('HSET', KEYS[2], 'rebuilt', page[#page][1])
return {state, #page}

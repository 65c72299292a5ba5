-- promote.lua: due retries and due held-back (deferred) tasks go back into their lane (read +
-- append + remove, one atomic step, so any number of members may run it at once without
-- duplicating or losing an item).
--
-- KEYS[1]  the tenant's retry schedule (ZSET)
-- KEYS[2]  the tenant's lane stream
-- KEYS[3]  the tenant's deferred set (ZSET, same member format)
-- ARGV[1]  the most items to move
--
-- Returns the number of items moved (retries first, then deferred tasks); call again while it
-- equals ARGV[1]. Due means a score at or below the server's clock. Each moved entry gets enqueued_at = now. An item that is not a
-- JSON array of strings is appended as {unreadable_retry = item}: the fleet then dead-letters
-- it as malformed_entry instead of dropping it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local moved = 0
for _, set in ipairs({KEYS[1], KEYS[3]}) do
  if moved >= limit then
    break
  end
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit - moved)
  for _, item in ipairs(due) do
    local ok, fields = pcall(cjson.decode, item)
    if ok and type(fields) == 'table' and #fields > 0 and #fields % 2 == 0 then
      fields[#fields + 1] = 'enqueued_at'
      fields[#fields + 1] = string.format('%d', now)
      redis.call('XADD', KEYS[2], '*', unpack(fields))
    else
      redis.call('XADD', KEYS[2], '*', 'unreadable_retry', item)
    end
    redis.call('ZREM', set, item)
  end
  moved = moved + #due
end
return moved

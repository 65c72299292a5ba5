-- admin_beat.lua: a member's admin loop says it is alive, and keeps the commands it runs fresh:
-- their stream entries' idle time (so no other member reclaims them) and their records'
-- alive_at (so a waiting CLI sees the command is still being worked on).
--
-- KEYS[1]  the live-members set (ZSET scored by last beat, server ms)
-- KEYS[2]  the admin command stream
-- KEYS[3…] the records of the running commands, in the order of ARGV[4…]
-- ARGV[1]  the consumer group
-- ARGV[2]  the member ('' for a CLI running a command with --local: it is no fleet member)
-- ARGV[3]  how old a beat may be before its member counts as gone, ms (beats ten times older
--          are pruned)
-- ARGV[4…] the stream entries of the running commands ('local:…' ones only touch the record)
--
-- Returns the entries this member no longer owns (another member reclaimed them).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * tonumber(ARGV[3]))
end
local lost = {}
for i = 4, #ARGV do
  local entry = ARGV[i]
  local owned = true
  if string.sub(entry, 1, 6) ~= 'local:' then
    local p = redis.call('XPENDING', KEYS[2], ARGV[1], entry, entry, 1, ARGV[2])
    if #p == 1 then
      redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], 0, entry, 'JUSTID')
    else
      owned = false
      lost[#lost + 1] = entry
    end
  end
  if owned and redis.call('HGET', KEYS[i - 1], 'state') == 'running' then
    redis.call('HSET', KEYS[i - 1], 'alive_at', now)
  end
end
return lost

-- admin_withdraw.lua: a CLI that gave up waiting withdraws its command unless a member has
-- started it: a withdrawn command never runs (admin_begin.lua finds it expired).
--
-- KEYS[1]  the command's record (HASH)
-- ARGV[1]  how long the expired record is kept, ms
--
-- Returns {'withdrawn', ''}, or {state, member} when the command is running or finished.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'state', 'expired', 'at', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {'withdrawn', ''}
end
return {state, redis.call('HGET', KEYS[1], 'member') or ''}

-- lease_renew.lua: extends a member's lease if this process still holds it.
--
-- KEYS[1]  the member's lease key
-- ARGV[1]  the holder's token
-- ARGV[2]  the new time to live, ms
--
-- Returns 1 when renewed, 0 when the lease expired or another process holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0

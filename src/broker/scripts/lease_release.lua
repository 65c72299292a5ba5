-- lease_release.lua: gives a member's lease up if this process still holds it.
--
-- KEYS[1]  the member's lease key
-- ARGV[1]  the holder's token
--
-- Returns 1 when released, 0 when it was not held by this token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

-- lease_release.lua: gives a lease up if this holder still holds it (one compare-and-delete:
-- a lease another holder took meanwhile stays theirs). Used for a member's lease and for a
-- tenant's notification delivery lease (held by the member id).
--
-- KEYS[1]  the lease key
-- ARGV[1]  the holder's token
--
-- Returns 1 when released, 0 when it was not held by this token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

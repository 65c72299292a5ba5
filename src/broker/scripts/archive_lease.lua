-- archive_lease.lua: the lease that lets one member at a time archive a tenant's dead letters
-- (src/fleet/archiver.rs). Taken when free or already this member's, extended on every batch;
-- given up (ARGV[2] = '0') only by its holder. A member that dies holding it loses it after the
-- TTL, and another member resumes the batch it left (archive:batch).
--
-- KEYS[1]  the tenant's archiver lease (STRING: the holder's token)
-- ARGV[1]  this member's token
-- ARGV[2]  the lease's time to live, ms; '0' to give it up
--
-- Returns 1 when this member holds the lease (or gave it up), 0 when another one holds it.
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if cur == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return 1
end
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0

-- archive_begin.lua: records the batch a member is about to archive, before anything is
-- uploaded, so that whoever archives the tenant next (this member after an error, another after
-- a crash) uploads exactly these entries again under exactly this object name, and never a
-- differently cut batch that would leave a copy behind.
--
-- KEYS[1]  the tenant's archiver lease (archive_lease.lua)
-- KEYS[2]  the tenant's batch (HASH: source, class, object, begun, ids)
-- ARGV[1]  this member's token: the batch is recorded only while it holds the lease
-- ARGV[2]  the source: 'dlq' (the dead-letter stream) or 'removed' (resolved / discarded ones)
-- ARGV[3]  the archive class (dead_letter, resolved, discarded)
-- ARGV[4]  the data object's path (its name holds the first and last id)
-- ARGV[5]  when the batch was begun, ms (its object's day)
-- ARGV[6]  the ids in the source stream, comma-separated, oldest first
--
-- Returns 1 when recorded, 0 when the lease is not this member's, -1 when a batch is already
-- recorded (resume that one first).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
redis.call('HSET', KEYS[2], 'source', ARGV[2], 'class', ARGV[3], 'object', ARGV[4],
  'begun', ARGV[5], 'ids', ARGV[6])
return 1

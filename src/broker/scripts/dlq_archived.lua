-- dlq_archived.lua: removes from Redis exactly the entries of a batch whose object the archive
-- confirmed (src/fleet/archiver.rs), and forgets the batch, in one atomic step on the tenant's
-- hash tag. Dead letters leave the dead-letter stream with their counts (lib/dlq_counts.lua,
-- prepended) and the trim counter; removed ones leave the stream of removed dead letters. The
-- record of each archived dead letter (only the record naming THAT dead letter in `dlq`) keeps
-- its state and gets `archived` = the object's path and `archived_at`; a dead letter's record
-- then expires after the retention passed (it lived as long as its dead letter, which is now in
-- the archive); a removed one's keeps the expiry it has.
--
-- KEYS[1]  the source stream: the dead-letter stream or the stream of removed ones
-- KEYS[2]  the tenant's batch (archive_begin.lua)
-- KEYS[3]  the tenant's dead-letter counts (used when the source is the dead-letter stream)
-- KEYS[4]  the tenant's trim counter (dead letters that left for the cap or the retention)
-- KEYS[5]  the prefix of the tenant's task records, or 'redrive:{t}:records-off' when records are off
-- KEYS[6]  the tenant's record index
-- KEYS[7]  the tenant's events stream
-- KEYS[8]  the tenant's review hash (lib/review.lua): an archived dead letter's review record
--          ends with it (used when the source is the dead-letter stream)
-- KEYS[9]  the tenant's folds (lib/review.lua): an archived representative's fold dissolves
-- ARGV[1]  the data object's path: the batch is removed only if it is still the one recorded
-- ARGV[2]  the source: 'dlq' or 'removed'
-- ARGV[3…] per entry: its id in the source, its dead-letter id, its task_id ('' for none), the
--          record's retention, ms, and the review record its archived copy carries ('' for
--          none; dead letters only)
--
-- Returns {removed ids (source ids; ids already gone are left out), records written}, or
-- {-1, 0} when the batch recorded is another (or none), or {-2, ids} when the review record of
-- these dead letters is no longer the one their archived copy carries (a move since the
-- archiver read it): nothing is written, and the archiver writes the object again (same name)
-- with the records as they are now, so a note or an assignment never vanishes with its record.
-- `rec_*` come from lib/record.lua, `dlc_*` from lib/dlq_counts.lua, `rv_*` from
-- lib/review.lua.
if (#ARGV - 2) % 5 ~= 0 or (ARGV[2] ~= 'dlq' and ARGV[2] ~= 'removed') then
  return redis.error_reply('dlq_archived.lua: malformed arguments')
end
if redis.call('HGET', KEYS[2], 'object') ~= ARGV[1] then
  return {-1, 0}
end
local dlq = ARGV[2] == 'dlq'
if dlq and KEYS[8] and KEYS[8] ~= '' then
  local changed = {}
  for i = 3, #ARGV, 5 do
    if (redis.call('HGET', KEYS[8], ARGV[i]) or '') ~= ARGV[i + 4] then
      changed[#changed + 1] = ARGV[i]
    end
  end
  if #changed > 0 then
    return {-2, changed}
  end
end
local R = rec_ctx(KEYS[5], KEYS[6], KEYS[7])
local now = rec_now()
local ts = string.format('%d', now)
local removed = {}
local written = 0
for i = 3, #ARGV, 5 do
  local id, dl_id, task_id, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 1 then
    if dlq then
      dlc_remove(KEYS[3], id, dlc_fields(e[1][2]))
      rv_forget(KEYS[8] or '', KEYS[9], id, rv_fingerprint(e[1][2]))
    end
    redis.call('XDEL', KEYS[1], id)
    removed[#removed + 1] = id
    if R and task_id ~= '' then
      local old = rec_get(R, task_id, 'state', 'dlq')
      if old[1] and old[2] == dl_id then
        rec_write(R, task_id, now, old[1], {'archived', ARGV[1], 'archived_at', ts})
        if dlq then
          rec_expire(R, task_id, ttl)
        end
        written = written + 1
      end
    end
  end
end
if dlq and #removed > 0 then
  redis.call('INCRBY', KEYS[4], #removed)
end
redis.call('DEL', KEYS[2])
return {removed, written}

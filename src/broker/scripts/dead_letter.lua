-- dead_letter.lua: an entry moves from its lane to its tenant's dead-letter stream
-- (check + append + ack + delete + count, one atomic step; all keys share the tenant's hash
-- tag). The task's record says `dead_lettered` — or `expired` for the class `expired` (past
-- its deadline) — with the class, the error and the dead letter's id, kept (no expiry) as long
-- as its dead letter, and a finish event, in the same step.
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the tenant's dead-letter stream
-- KEYS[3]  the tenant's trim counter (dead letters that left the stream for the cap or the
--          retention; those trimmed here are added)
-- KEYS[4]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- KEYS[5]  the entry's steps hash (see step.lua): its records are added to the dead letter as
--          'recorded_steps' (`recorded_steps` from lib/steps.lua, which the script registry
--          prepends) and the hash is deleted with the entry
-- KEYS[6]  the prefix of the tenant's task records ('redrive:{t}:task:'), or the tenant's
--          'redrive:{t}:records-off' when records are off (tasks.enabled = false): then no record is written
-- KEYS[7]  the tenant's record index (ZSET)
-- KEYS[8]  the tenant's events stream (one entry per finish)
-- KEYS[9]  the tenant's dead-letter counts (see lib/dlq_counts.lua): the dead letter is counted,
--          and the ones the ceiling trims are taken out
-- KEYS[10] the tenant's counter of dead letters deleted without an archive (past the ceiling)
-- KEYS[11] the tenant's review hash (lib/review.lua): the review records of the dead letters
--          the ceiling trims are forgotten with them
-- KEYS[12] the tenant's folds (lib/review.lua): a trimmed representative's fold dissolves
-- KEYS[13] the tenant's open dead-letter digest (lib/notify.lua), or its
--          '<prefix>:{t}:notify-off' when no notification
--          target of the tenant wants dead letters: the dead letter is counted into it
-- ARGV[1]  the consumer group
-- ARGV[2]  the entry id in the lane
-- ARGV[3]  the dead-letter stream's HARD CEILING (dead_letter.hard_max_len; the cap itself is
--          kept by the archiver, which archives before it removes): once the stream holds more
--          than the ceiling plus a slack (a tenth of it, at most 100), the oldest beyond the
--          ceiling are deleted (at most 1,000 per call) WITHOUT an archive — only while the
--          archive has been unreachable long enough for the stream to get here — and counted in
--          KEYS[3] and KEYS[10] (the member logs and counts them loudly). In batches like
--          MAXLEN ~, and the counts see what it removes
-- ARGV[4]  the consumer that must own the entry, or '' for any owner (reclaim of a crash loop)
-- ARGV[5]  the least idle time (ms) the entry must have, 0 for none (so a live owner's fresh
--          heartbeat wins over a reclaimer's decision)
-- ARGV[6]  how long a stats bucket is kept, ms
-- ARGV[7]  the task_id whose record changes, '' for none (an entry whose task_id is invalid)
-- ARGV[8]  when the run that failed started (ms, the server's clock as the member estimates
--          it), when ARGV[4] ran it (the run in the record's history); '' when no run ends
--          here (a reclaimer's decision, a malformed or expired entry)
-- ARGV[9…] field, value, field, value … of the dead letter (its `class` and `error` are the
--          record's too)
--
-- Returns {1, dead-letter id, trimmed} when moved (trimmed: older dead letters the ceiling
-- deleted, also added to KEYS[3] and KEYS[10]); {0, '', 0} when the entry is no longer pending for that owner, or
-- too fresh: nothing is written. The dead letter gets a `deliveries` field from the PEL: how
-- many times the entry started (its delivery count minus the read, see start.lua).
--
-- The dead letter is written first: it adds data, so while Redis is over maxmemory it refuses
-- the whole script (nothing written, the entry stays pending for the settler to try again),
-- whereas a script whose first write is XACK would be let through.
-- `recorded_steps` comes from lib/steps.lua, `rec_*` from lib/record.lua, `dlc_*` from
-- lib/dlq_counts.lua, `rv_*` from lib/review.lua, `nf_*` from lib/notify.lua; the script
-- registry prepends them.
local p
if ARGV[4] == '' then
  p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
else
  p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[4])
end
if #p == 0 or tonumber(p[1][3]) < tonumber(ARGV[5]) then
  return {0, '', 0}
end
local fields = {'deliveries', math.max(tonumber(p[1][4]) - 1, 0)}
local class, err = '', ''
local named = {}
for i = 9, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  named[ARGV[i]] = ARGV[i + 1]
  if ARGV[i] == 'class' then
    class = ARGV[i + 1]
  elseif ARGV[i] == 'error' then
    err = ARGV[i + 1]
  end
end
local rec = recorded_steps(KEYS[5])
if rec then
  fields[#fields + 1] = 'recorded_steps'
  fields[#fields + 1] = rec
end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local len = redis.call('XLEN', KEYS[2])
dlc_add(KEYS[9], named, len)
nf_digest_add(KEYS[13] or '', id, named)
local cap = tonumber(ARGV[3])
local trimmed = 0
if len > cap + math.min(100, math.ceil(cap / 10)) then
  local old = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', math.min(len - cap, 1000))
  for _, e in ipairs(old) do
    dlc_remove(KEYS[9], e[1], dlc_fields(e[2]))
    rv_forget(KEYS[11] or '', KEYS[12], e[1], rv_fingerprint(e[2]))
  end
  trimmed = #old
  redis.call('XTRIM', KEYS[2], 'MAXLEN', len - trimmed)
  redis.call('INCRBY', KEYS[3], trimmed)
  redis.call('INCRBY', KEYS[10], trimmed)
end
redis.call('XDEL', KEYS[1], ARGV[2])
if rec then
  redis.call('DEL', KEYS[5])
end
local R = rec_ctx(KEYS[6], KEYS[7], KEYS[8])
if R and ARGV[7] ~= '' then
  local state = 'dead_lettered'
  if class == 'expired' then
    state = 'expired'
  end
  local ran = ''
  if ARGV[8] ~= '' then
    ran = ARGV[4]
  end
  rec_end(R, ARGV[7], rec_now(), state, class, {'class', class, 'error', rec_error(err), 'dlq', id},
    ran, ARGV[8])
  rec_expire(R, ARGV[7], 0)
  rec_event(R, ARGV[7], state, id)
end
local t = redis.call('TIME')
local bucket = KEYS[4] .. math.floor(tonumber(t[1]) / 60)
if redis.call('HINCRBY', bucket, 'dead_lettered', 1) == 1 then
  redis.call('PEXPIRE', bucket, ARGV[6])
end
return {1, id, trimmed}

-- fast_ack.lua: completed entries that no other consumer can have taken over yet (see the
-- settler's fast-ack window) leave their lane: ack + delete, one atomic step, without
-- ack.lua's owner check, counted in the tenant's stats bucket of the current minute, and each
-- acked task's record says `done` (with its output, expiring after its retention, and a
-- finish event) — or, for an entry appended by enqueue.lua with its record's expiry, its done
-- goes to the done log and the record is not written (lib/record.lua).
--
-- KEYS[1]  the lane stream
-- KEYS[2]  the prefix of the tenant's per-minute stats buckets (HASH); the script appends the
--          minute by the server's clock (same hash tag, so the same slot)
-- KEYS[3]  the prefix of the tenant's task records ('redrive:{t}:task:'), or the tenant's
--          'redrive:{t}:records-off' when records are off (tasks.enabled = false): then no record is written
-- KEYS[4]  the tenant's record index (ZSET)
-- KEYS[5]  the tenant's events stream (one entry per finish)
-- ARGV[1]  the consumer group
-- ARGV[2]  how long a stats bucket is kept, ms
-- ARGV[3]  how many of the septuples (the first ones) completed after an earlier failure or
--          a replay
-- ARGV[4]  n: how many steps hashes follow in KEYS[6…5+n] (see step.lua): those of the ids that
--          may have recorded steps, deleted with them (nobody else can own these entries)
-- ARGV[5]  the consumer that ran the entries (this member; the done records' member)
-- ARGV[6]  m: how many septuples follow
-- ARGV[7…] m septuples, one per entry, as in ack.lua: entry id, task_id ('': no record),
--          retention of the done record in ms, output flag ('': no output kept, '0': whole,
--          '1': cut and marked), output text, when the run started (ms, the server's clock as
--          the member estimates it), the entry's `recorded` field ('0' when it has none)
-- then     done-log sections (lib/record.lua, the done log), one per window of entry ids: the
--          entries appended by enqueue.lua whose record's expiry (their `recorded` field)
--          covers the retention from now, as the member judges it: the window (the log key's
--          end), the smallest and the largest of their record expiries (ms), the longest of
--          their retentions (ms), n, o, then n pairs (entry id, when its run started), o pairs
--          ('<entry id>o' or '<entry id>t' when cut, the output), then the n task_ids. The
--          pairs go into the log as they are (one XADD, no work per entry here); the script
--          checks the smallest expiry against its own clock and, should the member have
--          judged wrong, gives each record the retention itself.
--
-- Why a script and not MULTI: while Redis is over maxmemory it refuses to queue any command
-- inside MULTI, so a MULTI of XACK + XDEL fails as a whole. XACK and XDEL free memory and are
-- not refused; a script is refused only when a command that may grow memory comes before its
-- first write, so the records and the stats HINCRBY go after the acks (in chunks).
--
-- Returns the number of ids acked (the others were no longer pending: settled already).
-- `chunks` and `ackdel` (batch writes, ack + delete, in chunks of ids) come from lib/chunks.lua; `rec_ctx`, `rec_now` and
-- `rec_done` from lib/record.lua; the script registry prepends both.
local R = rec_ctx(KEYS[3], KEYS[4], KEYS[5])
local r = tonumber(ARGV[3])
local last = 6 + 7 * tonumber(ARGV[6])
local first, rest = {}, {}
for i = 7, last, 7 do
  if i < 7 + 7 * r then
    first[#first + 1] = ARGV[i]
  else
    rest[#rest + 1] = ARGV[i]
  end
end
-- The log sections: where each one's pairs and task_ids are; their entry ids join `rest`
-- (one ack for the batch).
local sections = {}
local i = last + 1
while i <= #ARGV do
  local n, o = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local p = i + 6
  local ids = {}
  for j = 0, n - 1 do
    local id = ARGV[p + 2 * j]
    ids[j + 1] = id
    rest[#rest + 1] = id
  end
  sections[#sections + 1] = {
    window = ARGV[i], low = ARGV[i + 1], high = ARGV[i + 2], ttl = ARGV[i + 3],
    a = p, b = p + 2 * (n + o) - 1, t = p + 2 * (n + o), ids = ids,
  }
  i = p + 2 * (n + o) + n
end
local recovered = ackdel(KEYS[1], ARGV[1], first)
local acked = ackdel(KEYS[1], ARGV[1], rest) + recovered
local total = #first + #rest
if R and acked > 0 then
  -- When every entry was acked here, those appended with their record are written without
  -- a read (rec_done's `blind`); otherwise (some were settled already: an ack repeated after
  -- a lost reply) each record is checked first. The log sections are written whole either
  -- way: an entry of theirs not acked here was acked by this member's earlier call, which
  -- logged it too (a log entry is read only for a record still on that entry).
  local now = rec_now()
  local all = acked == total
  for k = 7, last, 7 do
    rec_done(R, now, ARGV[k], ARGV[k + 1], ARGV[k + 2], ARGV[k + 3], ARGV[k + 4], ARGV[5],
      ARGV[k + 5], all and ARGV[k + 6] ~= '0' and ARGV[k + 6] ~= '')
  end
  local ts = rec_ts(now)
  for _, S in ipairs(sections) do
    local key = rec_log_key(R, S.window)
    redis.call('XADD', key, '*', '_m', ARGV[5], '_e', ts, unpack(ARGV, S.a, S.b))
    -- The log lives as long as the longest-lived record that points into it.
    if redis.call('PTTL', key) < tonumber(S.high) - now then
      redis.call('PEXPIREAT', key, S.high)
    end
    local n = #S.ids
    if tonumber(S.low) < now + tonumber(S.ttl) then
      -- The member judged with a clock off by more than its margin: the records get the
      -- retention from now themselves.
      for j = 0, n - 1 do
        redis.call('PEXPIRE', R.prefix .. ARGV[S.t + j], S.ttl)
      end
      if redis.call('PTTL', key) < tonumber(S.ttl) then
        redis.call('PEXPIRE', key, S.ttl)
      end
    end
    if rec_listened(R) then
      for j = 0, n - 1 do
        rec_event(R, ARGV[S.t + j], 'done', S.ids[j + 1])
      end
    end
  end
end
local steps = {}
for i = 1, tonumber(ARGV[4]) do
  steps[#steps + 1] = KEYS[5 + i]
end
if #steps > 0 then
  chunks('DEL', {}, steps, 1000)
end
if acked > 0 then
  local t = redis.call('TIME')
  local bucket = KEYS[2] .. math.floor(tonumber(t[1]) / 60)
  if redis.call('HINCRBY', bucket, 'completed', acked) == acked then
    redis.call('PEXPIRE', bucket, ARGV[2])
  end
  if recovered > 0 then
    redis.call('HINCRBY', bucket, 'recovered', recovered)
  end
end
return acked

-- fast_ack.lua: completed entries that no other consumer can have taken over yet (see the
-- settler's fast-ack window) leave their lane: ack + delete, one atomic step, without
-- ack.lua's owner check, counted in the tenant's stats bucket of the current minute, and each
-- acked task's record says `done` (with its output, expiring after its retention, and a
-- finish event).
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
-- ARGV[3]  how many of the entries (the first ones) completed after an earlier failure or a
--          replay
-- ARGV[4]  n: how many steps hashes follow in KEYS[6…5+n] (see step.lua): those of the ids that
--          may have recorded steps, deleted with them (nobody else can own these entries)
-- ARGV[5]  the consumer that ran the entries (this member; the done records' member)
-- ARGV[6…] septuples, one per entry (at most fleet.ack_batch), as in ack.lua: entry id,
--          task_id ('': no record), retention of the done record in ms, output flag ('': no
--          output kept, '0': whole, '1': cut and marked), output text, when the run started (ms,
--          the server's clock as the member estimates it), the entry's `recorded` field ('0'
--          when it has none: '1', or when enqueue.lua wrote it, the record's expiry in ms)
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
local first, rest = {}, {}
for i = 6, #ARGV, 7 do
  if i < 6 + 7 * r then
    first[#first + 1] = ARGV[i]
  else
    rest[#rest + 1] = ARGV[i]
  end
end
local recovered = ackdel(KEYS[1], ARGV[1], first)
local acked = ackdel(KEYS[1], ARGV[1], rest) + recovered
if R and acked > 0 then
  -- When every entry was acked here, those appended with their record by enqueue.lua whose
  -- record lives long enough go to the done log (lib/record.lua; one XADD per second of entry
  -- ids), the others appended with their record are written without a read (rec_done's
  -- `blind`); otherwise (some were settled already: an ack repeated after a lost reply) each
  -- record is checked first.
  local now = rec_now()
  local ts = rec_ts(now)
  local all = acked == #first + #rest
  local member = ARGV[5]
  -- The done logs of this call by second (`order`: in the order first met); `L` is the one of
  -- the last entry, `sec` its second: consecutive entries mostly share it, checked without
  -- building a string (the entry id starts with `sec`, then three digits and '-').
  local logs, order = {}, {}
  local L, sec = nil, nil
  local listened = nil
  for k = 6, #ARGV, 7 do
    local id, task_id, mark = ARGV[k], ARGV[k + 1], ARGV[k + 6]
    local till = all and task_id ~= '' and tonumber(mark)
    local ttl = till and till > 1 and tonumber(ARGV[k + 2])
    if ttl and ttl > 0 and till >= now + ttl then
      if not (sec and string.byte(id, #sec + 4) == 45 and string.find(id, sec, 1, true) == 1) then
        local dash = string.find(id, '-', 1, true) or (#id + 1)
        sec = string.sub(id, 1, dash - 4)
        L = logs[sec]
        if L == nil then
          local key = rec_log_key(R, id)
          L = {key = key, n = 7, till = 0, at = mark,
            args = {'XADD', key, '*', '_m', member, '_e', ts}}
          logs[sec] = L
          order[#order + 1] = L
        end
      end
      local a, n = L.args, L.n
      -- When the run started (rec_started_at, inline: the ack's time when unknown or later).
      local started = ARGV[k + 5]
      local st = tonumber(started)
      if st == nil or st <= 0 or st > now then
        started = ts
      end
      a[n + 1] = id
      a[n + 2] = started
      n = n + 2
      local flag = ARGV[k + 3]
      if flag ~= '' then
        a[n + 1] = id .. (flag == '1' and 't' or 'o')
        a[n + 2] = ARGV[k + 4]
        n = n + 2
      end
      if n >= 6000 then
        -- Lua's unpack has a limit: a big batch goes in several entries.
        redis.call(unpack(a, 1, n))
        L.args = {'XADD', L.key, '*', '_m', member, '_e', ts}
        n = 7
      end
      L.n = n
      if till > L.till then
        L.till, L.at = till, mark
      end
      if listened == nil then
        listened = rec_listened(R)
      end
      if listened then
        rec_event(R, task_id, 'done', id)
      end
    else
      rec_done(R, now, id, task_id, ARGV[k + 2], ARGV[k + 3], ARGV[k + 4], member,
        ARGV[k + 5], all and mark ~= '0' and mark ~= '')
    end
  end
  for _, D in ipairs(order) do
    if D.n > 7 then
      redis.call(unpack(D.args, 1, D.n))
    end
    -- The log lives as long as the longest-lived record that points into it.
    if redis.call('PTTL', D.key) < D.till - now then
      redis.call('PEXPIREAT', D.key, D.at)
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

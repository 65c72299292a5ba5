-- admin_finish.lua: an admin command's outcome is recorded, audited, and its stream entry
-- settled (ack + delete), in one atomic step; every key shares the {@admin} hash tag.
--
-- KEYS[1]  the admin command stream
-- KEYS[2]  the command's record (HASH)
-- KEYS[3]  the audit stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the stream entry ('local:…' when the command did not come from the stream)
-- ARGV[3]  'result': record the outcome and audit it, only while the record is running this
--          entry; 'note': audit only (a duplicate or expired command, the record untouched);
--          'ack': settle the entry only
-- ARGV[4]  the result JSON kept in the record
-- ARGV[5]  how long the record is kept, ms
-- ARGV[6]  the audit stream's approximate cap (MAXLEN ~)
-- ARGV[7…] field, value, … of the audit entry
--
-- Returns 1 when the result or note was written, 0 when not (another executor of the same
-- entry finished first; its result stands).
local written = 0
if ARGV[3] == 'result' then
  if redis.call('HGET', KEYS[2], 'state') == 'running'
      and redis.call('HGET', KEYS[2], 'entry') == ARGV[2] then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('HSET', KEYS[2], 'state', 'done', 'result', ARGV[4], 'finished_at', now)
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 7))
    written = 1
  end
elseif ARGV[3] == 'note' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 7))
  written = 1
end
if string.sub(ARGV[2], 1, 6) ~= 'local:' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return written

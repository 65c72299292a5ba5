-- dlq_remove.lua: resolved or discarded dead letters leave the dead-letter stream for the
-- tenant's archive, stamped with who removed them, why, and by which command (copy + delete,
-- one atomic step; both keys share the tenant's hash tag).
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's archive of removed dead letters
-- ARGV[1]  the archive's approximate cap (MAXLEN ~)
-- ARGV[2]  the action: 'resolved' or 'discarded'
-- ARGV[3]  the operator
-- ARGV[4]  the reason
-- ARGV[5]  the admin command id
-- ARGV[6…] dead-letter ids
--
-- Returns the ids removed; ids already gone are left out (nothing is written for them).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = {}
for i = 6, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #e == 1 then
    local f = e[1][2]
    f[#f + 1] = 'dead_letter_id'
    f[#f + 1] = ARGV[i]
    f[#f + 1] = 'removed_action'
    f[#f + 1] = ARGV[2]
    f[#f + 1] = 'removed_by'
    f[#f + 1] = ARGV[3]
    f[#f + 1] = 'removed_reason'
    f[#f + 1] = ARGV[4]
    f[#f + 1] = 'removed_command'
    f[#f + 1] = ARGV[5]
    f[#f + 1] = 'removed_at'
    f[#f + 1] = tostring(now)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(f))
    redis.call('XDEL', KEYS[1], ARGV[i])
    removed[#removed + 1] = ARGV[i]
  end
end
return removed

-- replay.lua: dead letters go back into their lane as fresh tasks (delete from the dead-letter
-- stream + append to the lane, one atomic step; the keys share the tenant's hash tag). A dead
-- letter that is already gone (replayed, resolved or purged by someone else) is not re-added:
-- that is what makes concurrent operators, resumed jobs and re-executed commands replay each
-- entry once.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's lane stream
-- KEYS[3]  the tenant's stats bucket of the current minute (HASH)
-- ARGV[1]  how long the stats bucket is kept, ms
-- ARGV[2…] per entry: the dead-letter id, n (how many field and value strings follow), then
--          those n strings (the replayed task's fields)
--
-- Returns, per entry in order, the new lane entry id, or '' when the dead letter was gone.
-- The argument list is checked whole before anything is written.
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if not n or n < 2 or n % 2 ~= 0 or i + 1 + n > #ARGV then
    return redis.error_reply('replay.lua: malformed item at ARGV[' .. i .. ']')
  end
  i = i + 2 + n
end
local out = {}
local replayed = 0
i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    local args = {KEYS[2], '*'}
    for j = i + 2, i + 1 + n do
      args[#args + 1] = ARGV[j]
    end
    out[#out + 1] = redis.call('XADD', unpack(args))
    replayed = replayed + 1
  else
    out[#out + 1] = ''
  end
  i = i + 2 + n
end
if replayed > 0 then
  redis.call('HINCRBY', KEYS[3], 'replayed', replayed)
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return out

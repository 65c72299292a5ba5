-- notify_ack.lua: what became of one delivery attempt of an outbox event to one target, by the
-- member holding the tenant's delivery lease: sent (the target's cursor moves past it), retry
-- (attempts + 1, the next try after a delay), failed (given up after the last attempt: the
-- cursor moves past it and the delivery log says `failed`) or skipped (the target does not
-- want that type). The delivery log gets the attempt, the rate window counts it, and the
-- outbox is trimmed up to what every target has had — one atomic step, refused (nothing
-- written) when the lease or the cursor is no longer what the caller saw. All keys share the
-- tenant's hash tag.
--
-- KEYS[1]  the tenant's delivery lease
-- KEYS[2]  the tenant's outbox
-- KEYS[3]  the tenant's delivery state (see notify_tick.lua)
-- KEYS[4]  the tenant's delivery log (STREAM, capped)
-- ARGV[1]  the member
-- ARGV[2]  the lease's time to live, ms (renewed)
-- ARGV[3]  the target's name
-- ARGV[4]  the target's cursor as the caller saw it ('0-0' for none)
-- ARGV[5]  the event's id
-- ARGV[6]  'sent', 'retry', 'failed' or 'skipped'
-- ARGV[7]  retry: the delay before the next try, ms
-- ARGV[8]  a detail for the log (the status, or why the attempt failed; no secret)
-- ARGV[9]  the event's type
-- ARGV[10] the attempt's number (1 for the first)
-- ARGV[11] '1' when a request was sent (it counts against the tenant's rate)
-- ARGV[12] the delivery log's approximate cap
-- ARGV[13…] every target of the tenant, by name (the outbox keeps what one of them still needs)
--
-- Returns {1, next id, type, at, body}: the first event after the target's cursor now ('' for
-- none); {0} when refused.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
local name, outcome = ARGV[3], ARGV[6]
local ck = 'c:' .. name
if (redis.call('HGET', KEYS[3], ck) or '0-0') ~= ARGV[4] then
  return {0}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if outcome == 'retry' then
  redis.call('HSET', KEYS[3], 'a:' .. name, ARGV[10],
    'w:' .. name, string.format('%d', now + (tonumber(ARGV[7]) or 0)))
else
  redis.call('HSET', KEYS[3], ck, ARGV[5])
  redis.call('HDEL', KEYS[3], 'a:' .. name, 'w:' .. name)
  if outcome == 'failed' then
    redis.call('HINCRBY', KEYS[3], 'failed:' .. name, 1)
  end
end
if outcome ~= 'skipped' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[12], '*', 'event', ARGV[5], 'target', name,
    'type', ARGV[9], 'outcome', outcome, 'attempt', ARGV[10], 'detail', ARGV[8])
end
if ARGV[11] == '1' then
  local minute = string.format('%d', math.floor(now / 60000))
  if redis.call('HGET', KEYS[3], 'rm') ~= minute then
    redis.call('HSET', KEYS[3], 'rm', minute, 'rn', 1)
  else
    redis.call('HINCRBY', KEYS[3], 'rn', 1)
  end
end

-- The outbox keeps only what a target has not had yet.
local function cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am) or 0, tonumber(as) or 0, tonumber(bm) or 0, tonumber(bs) or 0
  if am ~= bm then
    return am < bm and -1 or 1
  end
  if as ~= bs then
    return as < bs and -1 or 1
  end
  return 0
end
local low = nil
for i = 13, #ARGV do
  local c = redis.call('HGET', KEYS[3], 'c:' .. ARGV[i]) or '0-0'
  if low == nil or cmp(c, low) < 0 then
    low = c
  end
end
if low and low ~= '0-0' then
  local ms, seq = string.match(low, '^(%d+)-(%d+)$')
  if ms then
    redis.call('XTRIM', KEYS[2], 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
  end
end

local nxt = redis.call('XRANGE', KEYS[2], '(' .. (redis.call('HGET', KEYS[3], ck) or '0-0'), '+',
  'COUNT', 1)
if #nxt == 0 then
  return {1, '', '', '', ''}
end
local f = {}
for j = 1, #nxt[1][2], 2 do
  f[nxt[1][2][j]] = nxt[1][2][j + 1]
end
return {1, nxt[1][1], f['type'] or '', f['at'] or '', f['body'] or ''}

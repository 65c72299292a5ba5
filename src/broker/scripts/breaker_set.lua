-- breaker_set.lua: an operator opens or closes a tenant's breaker. Opened by hand, it is held
-- (no cool-down, no probe) until closed by hand; closing clears the failure window and any
-- probe, and releases every task the breaker held back: the deferred set's items all become
-- due now (the recovery loop moves them to the lane), while genuine retries, in the retry
-- schedule, keep their own time. Reason operator; the operator's text goes into the detail.
--
-- KEYS[1]  the tenant's breaker (HASH)
-- KEYS[2]  the tenant's failure window (HASH)
-- KEYS[3]  the tenant's transition log (STREAM, capped)
-- KEYS[4]  the tenant's deferred set (ZSET scored by due time)
-- ARGV[1]  'open' or 'closed'
-- ARGV[2]  who (the operator)
-- ARGV[3]  why (the operator's reason)
-- ARGV[4]  the transition log's approximate cap
--
-- Returns {from, to, moved}: moved is 0 when the breaker already was in that state (held open,
-- or closed); nothing is written then.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] == 'open' then
  if from == 'open' and (redis.call('HGET', KEYS[1], 'until') or '0') == '0' then
    return {from, 'open', 0}
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', string.format('%d', now),
    'until', '0', 'reason', 'operator', 'detail', ARGV[3], 'by', ARGV[2])
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
else
  if from == 'closed' then
    return {from, 'closed', 0}
  end
  redis.call('HSET', KEYS[1], 'state', 'closed', 'since', string.format('%d', now),
    'reason', 'operator', 'detail', ARGV[3], 'by', ARGV[2])
  redis.call('HDEL', KEYS[1], 'until', 'probe', 'probe_until')
  redis.call('DEL', KEYS[2])
  -- Every held task due now (score 0): one command, whatever the set's size.
  redis.call('ZUNIONSTORE', KEYS[4], 1, KEYS[4], 'WEIGHTS', 0)
end
redis.call('HINCRBY', KEYS[1], 'transitions', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'from', from, 'to', ARGV[1],
  'reason', 'operator', 'detail', ARGV[3], 'by', ARGV[2])
return {from, ARGV[1], 1}

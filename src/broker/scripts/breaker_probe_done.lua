-- breaker_probe_done.lua: the probe's outcome decides a half-open breaker: success closes it
-- (half_open → closed, reason probe_succeeded, failure window cleared, every task the breaker
-- held back due at once as when an operator closes it), failure re-opens it for
-- another cool-down (half_open → open, reason probe_failed). An outcome that says nothing about
-- the tenant's health (an ignored class, an entry lost to another member) only gives the token
-- back. Only the token's holder decides: a stale token (expired and handed on, or the breaker
-- moved by an operator meanwhile) changes nothing.
--
-- KEYS[1]  the tenant's breaker (HASH)
-- KEYS[2]  the tenant's failure window (HASH)
-- KEYS[3]  the tenant's transition log (STREAM, capped)
-- KEYS[4]  the tenant's deferred set (ZSET scored by due time)
-- ARGV[1]  the probe token: '<member> <entry id>'
-- ARGV[2]  'success', 'failure' or 'release'
-- ARGV[3]  the cool-down, ms (after a failure)
-- ARGV[4]  who reports (the member id)
-- ARGV[5]  a detail for the log (the probe's task id, the failure class)
-- ARGV[6]  the transition log's approximate cap
--
-- Returns {state, moved}: the breaker's state after the call and 1 when this call moved it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state ~= 'half_open' or redis.call('HGET', KEYS[1], 'probe') ~= ARGV[1] then
  return {state, 0}
end
if ARGV[2] == 'release' then
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  return {state, 0}
end
local to, reason
if ARGV[2] == 'success' then
  to, reason = 'closed', 'probe_succeeded'
  redis.call('HSET', KEYS[1], 'state', 'closed', 'since', string.format('%d', now),
    'reason', reason, 'detail', ARGV[5], 'by', ARGV[4])
  redis.call('HDEL', KEYS[1], 'until', 'probe', 'probe_until')
  redis.call('DEL', KEYS[2])
  redis.call('ZUNIONSTORE', KEYS[4], 1, KEYS[4], 'WEIGHTS', 0)
else
  to, reason = 'open', 'probe_failed'
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', string.format('%d', now),
    'until', string.format('%d', now + tonumber(ARGV[3])), 'reason', reason,
    'detail', ARGV[5], 'by', ARGV[4])
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
end
redis.call('HINCRBY', KEYS[1], 'transitions', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'from', 'half_open', 'to', to,
  'reason', reason, 'detail', ARGV[5], 'by', ARGV[4])
return {to, 1}

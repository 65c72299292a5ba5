-- breaker_probe.lua: admission of the one probe of a tenant whose breaker is not closed. An
-- open breaker whose cool-down is over turns half-open here (open → half_open, reason
-- cooldown_elapsed); a half-open breaker hands its single probe token to the first caller
-- (SET NX style: the token is taken only when absent or expired), so exactly one task of the
-- tenant runs fleet-wide until the probe's outcome closes or re-opens the breaker.
--
-- KEYS[1]  the tenant's breaker (HASH)
-- KEYS[2]  the tenant's transition log (STREAM, capped)
-- ARGV[1]  the probe token: '<member> <entry id>'
-- ARGV[2]  how long the token lasts, ms (past it another probe may run: its holder died)
-- ARGV[3]  who asks (the member id, kept with a transition)
-- ARGV[4]  the transition log's approximate cap
--
-- Returns {verdict, state, until, moved}: verdict 'run' (closed: run as usual), 'probe' (this
-- caller holds the token and runs the probe) or 'wait' (still cooling down, held by an
-- operator, or another probe runs); until is the end of the cool-down (open; 0 when held by an
-- operator) or of the token (half_open); moved is 1 when this call made the breaker half-open.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state ~= 'open' and state ~= 'half_open' then
  return {'run', 'closed', 0, 0}
end
local moved = 0
if state == 'open' then
  local u = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') or 0
  if u == 0 or now < u then
    return {'wait', 'open', u, 0}
  end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'since', string.format('%d', now),
    'reason', 'cooldown_elapsed', 'detail', 'the cool-down is over: one probe may run',
    'by', ARGV[3])
  redis.call('HDEL', KEYS[1], 'until', 'probe', 'probe_until')
  redis.call('HINCRBY', KEYS[1], 'transitions', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'from', 'open', 'to', 'half_open',
    'reason', 'cooldown_elapsed', 'detail', 'the cool-down is over: one probe may run',
    'by', ARGV[3])
  moved = 1
end
local pu = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0') or 0
if redis.call('HEXISTS', KEYS[1], 'probe') == 1 and pu > now then
  return {'wait', 'half_open', pu, moved}
end
local expires = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'probe', ARGV[1], 'probe_until', string.format('%d', expires))
redis.call('HINCRBY', KEYS[1], 'probes', 1)
return {'probe', 'half_open', expires, moved}

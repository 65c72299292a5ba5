-- admin_begin.lua: a fleet member (or a CLI with --local) claims the execution of an admin
-- command. The command's record is its idempotency key: one command id executes at most once
-- however often it is sent, while the same stream entry taken over after a crash resumes it.
--
-- KEYS[1]  the command's record (HASH)
-- ARGV[1]  the stream entry carrying the command ('local:…' for --local)
-- ARGV[2]  the executor (member id, or 'local@host' for --local)
-- ARGV[3]  the deadline, ms by the server's clock (0: none): a command not started by then
--          never runs
-- ARGV[4]  how long an expired record is kept, ms
-- ARGV[5]  the tenants the command touches, as the executor computed them from the command it
--          runs (src/admin/scope.rs: a JSON list, or '"*"'), kept in the record's 'tenants'
--
-- Returns {'run', now} when the caller must execute it (a fresh command, or the same entry
-- taken over); {'done', result} when it ran already (its result JSON); {'running', member}
-- when another entry with the same command id is being executed; {'expired', result} when it
-- was withdrawn by its CLI or is past its deadline (then marked expired here; it never runs).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' or state == 'expired' then
  return {state, redis.call('HGET', KEYS[1], 'result') or ''}
end
if state == 'running' then
  if redis.call('HGET', KEYS[1], 'entry') == ARGV[1] then
    redis.call('HSET', KEYS[1], 'member', ARGV[2], 'alive_at', now, 'tenants', ARGV[5])
    return {'run', now}
  end
  return {'running', redis.call('HGET', KEYS[1], 'member') or ''}
end
local deadline = tonumber(ARGV[3])
if deadline > 0 and now > deadline then
  redis.call('HSET', KEYS[1], 'state', 'expired', 'at', now, 'tenants', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'expired', ''}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'entry', ARGV[1], 'member', ARGV[2],
  'started_at', now, 'alive_at', now, 'tenants', ARGV[5])
return {'run', now}

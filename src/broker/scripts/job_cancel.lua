-- job_cancel.lua: asks a replay job to stop. The job reads the request after its current step
-- (each step is atomic), records how far it got, and can be resumed later.
--
-- KEYS[1]  the job (HASH)
-- ARGV[1]  the id of the cancel command
--
-- Returns the job's state, or false when there is no such job. The request is only set on a
-- job that has not finished ('running' or 'interrupted').
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return false
end
if state == 'running' or state == 'interrupted' then
  redis.call('HSET', KEYS[1], 'cancel', ARGV[1])
end
return state

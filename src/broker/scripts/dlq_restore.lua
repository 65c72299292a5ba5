-- dlq_restore.lua: archived dead letters back into the tenant's dead-letter stream (`redrive
-- dlq archive restore`, an admin command run exactly once), counted (lib/dlq_counts.lua), each
-- at most once (the tenant's hash of restored ids), and their tasks' records say so — in one
-- atomic step on the tenant's hash tag.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's dead-letter counts
-- KEYS[3]  the tenant's restored ids (HASH: archived dead-letter id → new id)
-- KEYS[4]  the prefix of the tenant's task records, or 'redrive:{t}:records-off' when records are off
-- KEYS[5]  the tenant's record index
-- KEYS[6]  the tenant's events stream
-- ARGV[1]  the hard ceiling: a stream at it takes no restore (the entry stays archived)
-- ARGV[2…] per entry: its archived dead-letter id, its task_id ('' for none), its kind, the
--          number of field values that follow (2 × fields), then field, value, …
--
-- Each entry is appended with its fields plus `restored_from` = its archived id. Only a missing
-- record, or the record naming that archived dead letter in `dlq`, is written: `dead_lettered`
-- (`expired` for the class expired), `dlq` = the new id, `archived` emptied, kept without
-- expiry (as every dead letter's record); a record of a later life of the task_id is left alone.
--
-- Returns per entry {archived id, new id or the earlier restore's id, 'restored' | 'already' |
-- 'full'}. `rec_*` come from lib/record.lua, `dlc_*` from lib/dlq_counts.lua.
local R = rec_ctx(KEYS[4], KEYS[5], KEYS[6])
local now = rec_now()
local ceiling = tonumber(ARGV[1])
local out = {}
local i = 2
while i <= #ARGV do
  local old_id, task_id, kind, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if not n or n % 2 ~= 0 or i + 3 + n > #ARGV then
    return redis.error_reply('dlq_restore.lua: malformed arguments')
  end
  local earlier = redis.call('HGET', KEYS[3], old_id)
  if earlier then
    out[#out + 1] = {old_id, earlier, 'already'}
  elseif redis.call('XLEN', KEYS[1]) >= ceiling then
    out[#out + 1] = {old_id, '', 'full'}
  else
    local fields = {}
    local named = {}
    for j = i + 4, i + 3 + n, 2 do
      fields[#fields + 1] = ARGV[j]
      fields[#fields + 1] = ARGV[j + 1]
      named[ARGV[j]] = ARGV[j + 1]
    end
    fields[#fields + 1] = 'restored_from'
    fields[#fields + 1] = old_id
    local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
    dlc_add(KEYS[2], named, redis.call('XLEN', KEYS[1]))
    redis.call('HSET', KEYS[3], old_id, id)
    if R and task_id ~= '' then
      local old = rec_get(R, task_id, 'state', 'dlq')
      if not old[1] or old[2] == old_id then
        local state = 'dead_lettered'
        if named['class'] == 'expired' then
          state = 'expired'
        end
        local pairs = {'dlq', id, 'archived', '', 'restored_from', old_id, 'class',
          named['class'] or '', 'error', rec_error(named['error'] or '')}
        if not old[1] then
          pairs[#pairs + 1] = 'kind'
          pairs[#pairs + 1] = kind
        end
        rec_write(R, task_id, now, state, pairs)
        rec_expire(R, task_id, 0)
      end
    end
    out[#out + 1] = {old_id, id, 'restored'}
  end
  i = i + 4 + n
end
return out

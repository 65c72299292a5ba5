-- lib/notify.lua: a prelude the script registry prepends to dead_letter.lua, so a dead letter of
-- a tenant whose notification targets want dead letters is counted into the tenant's open
-- digest in the same atomic step that makes it (never one notification per dead letter: the
-- delivering member turns the digest into one outbox event per interval, notify_tick.lua).
--
-- The digest is the HASH 'redrive:{t}:notify:pending' (the tenant's hash tag): 'n' (dead
-- letters), 'since' (server ms of the first), 'first' and 'last' (their ids), 'c:<class>'
-- (per class), 's<i>' for i = 1..NF_SAMPLES (the first dead letters, JSON without payloads).

local NF_SAMPLES = 5

-- Counts dead letter `id` (fields `f`, a name → value table) into the digest `key`; '' or the
-- tenant's '<prefix>:{t}:notify-off' (the tenant's targets want no dead letters; a key of the
-- tenant's slot, so the call stays single-slot on a cluster) writes nothing.
local function nf_off(key)
  return key == nil or key == '' or string.sub(key, -11) == ':notify-off'
end

local function nf_digest_add(key, id, f)
  if nf_off(key) then
    return
  end
  local n = redis.call('HINCRBY', key, 'n', 1)
  if n == 1 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('HSET', key, 'since', string.format('%d', now), 'first', id)
  end
  redis.call('HSET', key, 'last', id)
  redis.call('HINCRBY', key, 'c:' .. (f['class'] or ''), 1)
  if n <= NF_SAMPLES then
    redis.call('HSET', key, 's' .. n, cjson.encode({
      id = id,
      task_id = f['task_id'] or '',
      kind = f['kind'] or '',
      class = f['class'] or '',
      fingerprint = f['fingerprint'] or '',
      error = string.sub(f['error'] or '', 1, 300),
    }))
  end
end

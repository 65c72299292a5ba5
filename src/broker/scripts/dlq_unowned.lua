-- dlq_unowned.lua: the oldest dead letter of a tenant nobody owns (state `new`: not in review,
-- not escalated, not folded under a representative), for the gauge of its age. Reads from the
-- review hash's cursor 'unowned_to' (every dead letter up to it is owned or gone: dead letters
-- only become owned, except when a fold dissolves, which deletes the cursor), so a call reads
-- only the owned dead letters after it, at most ARGV[1] of them, and moves the cursor on.
-- All keys share the tenant's hash tag.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's review hash (lib/review.lua)
-- KEYS[3]  the tenant's folds (lib/review.lua)
-- ARGV[1]  how many dead letters one call reads at most (≥ 1)
--
-- Returns {'found', id} (the oldest unowned dead letter), {'none', ''} (every dead letter is
-- owned, or there is none) or {'more', id} (the budget ran out at `id`, every dead letter up to
-- it owned: the next call goes on). `rv_*` come from lib/review.lua.
local budget = math.max(1, tonumber(ARGV[1]) or 1)
local cursor = redis.call('HGET', KEYS[2], 'unowned_to')
local from = cursor and ('(' .. cursor) or '-'
local reps = {}
local scanned, last = 0, nil
local result = nil
while scanned < budget and not result do
  local asked = math.min(100, budget - scanned)
  local page = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', asked)
  for _, e in ipairs(page) do
    scanned = scanned + 1
    local id, fp = e[1], rv_fingerprint(e[2])
    local rep = false
    if fp ~= '' then
      if reps[fp] == nil then
        reps[fp] = redis.call('HGET', KEYS[3], fp) or false
      end
      rep = reps[fp]
    end
    local owned = rep and rep ~= id
    if not owned then
      local _, r = rv_get(KEYS[2], id)
      owned = r ~= nil and (r.state == 'in_review' or r.state == 'escalated')
    end
    if not owned then
      result = {'found', id}
      break
    end
    last = id
  end
  if not result and #page < asked then
    result = {'none', ''}
  end
  if last then
    from = '(' .. last
  end
end
if last and last ~= cursor then
  redis.call('HSET', KEYS[2], 'unowned_to', last)
end
return result or {'more', last or ''}

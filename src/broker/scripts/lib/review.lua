-- lib/review.lua: a prelude the script registry prepends to every script that moves a dead
-- letter's review or removes dead letters, so review records change in the same atomic step as
-- the dead letters they describe.
--
-- A tenant's review hash 'redrive:{t}:dlq:review' (the tenant's hash tag) holds:
--   '<dead-letter id>'  the review record of a dead letter past `new`, or one with a note: JSON
--                       {state, assignee, escalated_to, fp, since, fold?, log: [...], dropped?}
--                       (`fold` = the fingerprint it represents; `log` the last RV_LOG_MAX
--                       moves and notes, `dropped` how many older ones were let go). A dead
--                       letter without a record is `new`: the stream's entries stay immutable
--                       and a storm of 100,000 untouched dead letters costs nothing here.
--   '#in_review', '#escalated'  how many records are in that state
--   'f:<fingerprint>'           how many records belong to dead letters with that fingerprint
--                               (dlq_fold.lua checks it has merged all of them)
--   'unowned_to'                dlq_unowned.lua's cursor: every dead letter up to this id is
--                               owned (in review, escalated, folded) or gone
-- and the folds hash 'redrive:{t}:dlq:folds' maps a fingerprint to the dead letter that
-- represents every dead letter with it (its members: `folded`, acted on through it).
--
-- Whoever removes a dead letter (replay.lua, dlq_remove.lua, dlq_purge.lua, the cap in
-- dead_letter.lua) calls rv_forget for it; a representative that leaves dissolves its fold.

local RV_LOG_MAX = 50

-- The states, in the order a dead letter moves through them.
local RV_RANK = {new = 0, in_review = 1, escalated = 2}

-- The raw record of dead letter `id` and the record decoded (nil, nil without one).
local function rv_get(review, id)
  local raw = redis.call('HGET', review, id)
  if not raw then
    return nil, nil
  end
  local ok, r = pcall(cjson.decode, raw)
  if not ok or type(r) ~= 'table' then
    return raw, nil
  end
  if type(r.log) ~= 'table' then
    r.log = {}
  end
  return raw, r
end

-- Adds `n` to the count of records in `state` (new is not counted: it is the default).
local function rv_count(review, state, n)
  if state == 'in_review' or state == 'escalated' then
    if redis.call('HINCRBY', review, '#' .. state, n) <= 0 then
      redis.call('HDEL', review, '#' .. state)
    end
  end
end

-- Adds `n` to the count of records of fingerprint `fp`.
local function rv_fp_count(review, fp, n)
  if fp and fp ~= '' then
    if redis.call('HINCRBY', review, 'f:' .. fp, n) <= 0 then
      redis.call('HDEL', review, 'f:' .. fp)
    end
  end
end

-- Appends `item` to record `r`'s log, letting the oldest go beyond RV_LOG_MAX.
local function rv_log(r, item)
  r.log[#r.log + 1] = item
  while #r.log > RV_LOG_MAX do
    table.remove(r.log, 1)
    r.dropped = (tonumber(r.dropped) or 0) + 1
  end
end

-- Writes record `r` of dead letter `id`, keeping the counts: `before` is the state it had
-- (nil: no record yet).
local function rv_put(review, id, r, before)
  if before == nil then
    rv_fp_count(review, r.fp, 1)
  end
  if before ~= r.state then
    if before then
      rv_count(review, before, -1)
    end
    rv_count(review, r.state, 1)
  end
  redis.call('HSET', review, id, cjson.encode(r))
end

-- The fingerprint of a dead letter's flat field list ('' without one).
local function rv_fingerprint(flat)
  for j = 1, #flat, 2 do
    if flat[j] == 'fingerprint' then
      return flat[j + 1]
    end
  end
  return ''
end

-- Forgets the review of dead letter `id`, which leaves the dead letters now: its record and
-- counts go; a representative's fold dissolves (its members are `new` again, so the unowned
-- scan starts over). `fp`, the dead letter's fingerprint when the caller has its fields (nil
-- otherwise), dissolves a fold it represents even without a record. Returns the record's raw
-- JSON (nil without one), for an archived copy. `review` '' means the caller passes no review
-- keys: nothing to do.
local function rv_forget(review, folds, id, fp)
  if review == nil or review == '' then
    return nil
  end
  local raw, r = rv_get(review, id)
  local fold = fp
  if raw then
    redis.call('HDEL', review, id)
    if r then
      rv_count(review, r.state, -1)
      rv_fp_count(review, r.fp, -1)
      if type(r.fold) == 'string' and r.fold ~= '' then
        fold = r.fold
      end
    end
  end
  if fold and fold ~= '' and redis.call('HGET', folds, fold) == id then
    redis.call('HDEL', folds, fold)
    redis.call('HDEL', review, 'unowned_to')
  end
  return raw
end

-- dlq_fold.lua: folds every dead letter of one fingerprint in a tenant under one representative
-- (the oldest), so an operator acts on the group once: its members (the others, and any that
-- arrive later with that fingerprint) are `folded`, their review is the representative's, and
-- a replay, resolve or discard of the representative takes them all. The review records some
-- members already had are merged into the representative's (their log, and the furthest
-- state: escalated over in_review over new), in the same atomic step. All keys share the
-- tenant's hash tag.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's review hash (lib/review.lua)
-- KEYS[3]  the tenant's folds (lib/review.lua)
-- ARGV[1]  the fingerprint
-- ARGV[2]  the representative: the oldest dead letter with it, as the caller's scan found
-- ARGV[3]  the operator
-- ARGV[4]  the reason
-- ARGV[5]  the admin command id
-- ARGV[6…] every dead letter of the fingerprint that has a review record, as the caller found
--          them in the review hash (the representative may be among them)
--
-- Returns {status, representative, merged}: 'folded' (done; merged: records merged into the
-- representative's); 'exists' (the fingerprint is folded already, under the representative
-- returned: nothing written); 'gone' (ARGV[2] is no dead letter of that fingerprint) or 'stale'
-- (the records of the fingerprint are not exactly those listed: one was added or removed
-- meanwhile) — nothing written, the caller looks again. `rv_*` come from lib/review.lua.
local fp, rep, op, why, cmd = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local existing = redis.call('HGET', KEYS[3], fp)
if existing then
  return {'exists', existing, 0}
end
local e = redis.call('XRANGE', KEYS[1], rep, rep)
if #e == 0 or rv_fingerprint(e[1][2]) ~= fp then
  return {'gone', '', 0}
end
-- The listed records must be exactly the fingerprint's records.
local listed, n = {}, 0
for i = 6, #ARGV do
  if not listed[ARGV[i]] then
    local _, r = rv_get(KEYS[2], ARGV[i])
    if not r or r.fp ~= fp then
      return {'stale', '', 0}
    end
    listed[ARGV[i]] = r
    n = n + 1
  end
end
if n ~= (tonumber(redis.call('HGET', KEYS[2], 'f:' .. fp)) or 0) then
  return {'stale', '', 0}
end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local R = listed[rep]
local before = R and R.state or nil
if not R then
  R = {state = 'new', assignee = '', escalated_to = '', fp = fp, since = now, log = {}}
end
-- In a fixed order (a script's writes must not depend on a table's iteration order).
local ids = {}
for id in pairs(listed) do
  ids[#ids + 1] = id
end
table.sort(ids)
local merged = 0
for _, id in ipairs(ids) do
  local r = listed[id]
  if id ~= rep then
    for _, item in ipairs(r.log) do
      item.from = id
      rv_log(R, item)
    end
    if (RV_RANK[r.state] or 0) > (RV_RANK[R.state] or 0) then
      R.state, R.assignee, R.escalated_to, R.since = r.state, r.assignee, r.escalated_to, r.since
    end
    redis.call('HDEL', KEYS[2], id)
    rv_count(KEYS[2], r.state, -1)
    rv_fp_count(KEYS[2], fp, -1)
    merged = merged + 1
  end
end
R.fold = fp
rv_log(R, {at = now, by = op, act = 'fold', why = why, cmd = cmd, to = fp})
rv_put(KEYS[2], rep, R, before)
redis.call('HSET', KEYS[3], fp, rep)
return {'folded', rep, merged}

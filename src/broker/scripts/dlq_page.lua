-- dlq_page.lua: one bounded step of a filtered scan of a tenant's dead letters, matched on the
-- server so a rare filter moves its matches, not the entries it passed over. Read-only; the
-- scan budget bounds the work of one call.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  optional: the tenant's review hash (lib/review.lua) — with KEYS[3], the review
--          criteria below apply and each match's review comes back
-- KEYS[3]  optional: the tenant's folds (lib/review.lua)
-- ARGV[1]  'asc' (oldest first, XRANGE) or 'desc' (newest first, XREVRANGE)
-- ARGV[2]  where the scan starts: an id, an exclusive '(id', or '-' ('+' for desc)
-- ARGV[3]  where it ends (inclusive): an id, or '+' ('-' for desc)
-- ARGV[4]  how many entries it reads at most (the scan budget, ≥ 1)
-- ARGV[5]  how many matches it returns at most (≥ 1): it stops at the last one
-- ARGV[6]  a JSON filter {"classes": […], "kinds": […], "fingerprints": […], "task_id": "…",
--          "payload": ["path=value", …]}; a missing or empty list or text accepts anything.
--          A payload criterion holds when the payload is a JSON object whose value at `path`
--          (a top-level field, or a dotted path into objects) is the string `value`, or a
--          number equal to it, or a boolean or null written as it; any criterion may hold
--          (src/admin/select.rs Filter::matches is the same test). With the review keys
--          also "states": [new|in_review|escalated|folded …] (a fold's member is `folded`; a
--          dead letter without a record `new`), "assignees": […] (its own record's assignee)
--          and "members": "hide" (a fold's members are skipped: its representative stands for
--          them) or "show" (the default).
-- ARGV[7…] the fields of each match to return (none: every field)
--
-- Returns {scanned, last, ended, matches, reviews}: how many entries were read; the id of the
-- last one read ('' when none: then nothing is left in the range); 1 when the range has no
-- entry after `last`, else 0; matches flat id, {field, value, …}, … in scan order; with the
-- review keys, reviews flat per match: the review record's JSON ('' without one; a member's
-- is its representative's) and its fold's representative ('' when none; the match's own id
-- when it represents one). `rv_*` come from lib/review.lua (prepended by the registry).
local desc = ARGV[1] == 'desc'
local budget = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local filter = cjson.decode(ARGV[6])
local function set(list)
  if type(list) ~= 'table' or #list == 0 then
    return nil
  end
  local s = {}
  for _, v in ipairs(list) do
    s[v] = true
  end
  return s
end
local function text(v)
  if type(v) == 'string' and v ~= '' then
    return v
  end
  return nil
end
local want_class, want_kind, want_fp = set(filter.classes), set(filter.kinds), set(filter.fingerprints)
local want_task = text(filter.task_id)
local RK, FK = KEYS[2], KEYS[3]
if RK == '' or FK == nil or FK == '' then
  RK, FK = nil, nil
end
local want_state = RK and set(filter.states)
local want_assignee = RK and set(filter.assignees)
local hide_members = RK ~= nil and filter.members == 'hide'
local reps = {}

-- The representative of fingerprint `fp`'s fold, or false.
local function rep_of(fp)
  if fp == '' then
    return false
  end
  if reps[fp] == nil then
    reps[fp] = redis.call('HGET', FK, fp) or false
  end
  return reps[fp]
end

-- A dead letter's review: its state, its own record's assignee, the record's JSON ('' for
-- none; a member's is its representative's) and its fold's representative (false for none).
local function review_of(id, fp)
  local rep = rep_of(fp)
  if rep and rep ~= id then
    return 'folded', '', redis.call('HGET', RK, rep) or '', rep
  end
  local raw, r = rv_get(RK, id)
  if not raw then
    return 'new', '', '', rep
  end
  if not r then
    return 'new', '', raw, rep
  end
  return r.state or 'new', r.assignee or '', raw, rep
end
local only = nil
if #ARGV > 6 then
  only = {}
  for i = 7, #ARGV do
    only[ARGV[i]] = true
  end
end

-- Text that JSON writes as it is (no escapes), so a payload holding it holds it verbatim:
-- such a name and value are looked for as plain text first, and only a payload holding
-- them is decoded.
local function verbatim(t)
  return t ~= nil and t ~= '' and string.match(t, '^[%w _%.%-:@%+=,;]*$') ~= nil
end

-- The payload criteria: {path = {key, …}, value = '…', quick = {'"key"', 'value'}}.
local criteria = nil
if type(filter.payload) == 'table' and #filter.payload > 0 then
  criteria = {}
  for _, c in ipairs(filter.payload) do
    local eq = type(c) == 'string' and string.find(c, '=', 1, true)
    if eq then
      local path, value = string.sub(c, 1, eq - 1), string.sub(c, eq + 1)
      local keys = {}
      for key in string.gmatch(path, '[^%.]+') do
        keys[#keys + 1] = key
      end
      local quick = {}
      local leaf = keys[#keys]
      if verbatim(leaf) then
        quick[#quick + 1] = '"' .. leaf .. '"'
      end
      -- A number may be written another way in the payload (3 for 3.0): decoded, not sought.
      if verbatim(value) and tonumber(value) == nil then
        quick[#quick + 1] = value
      end
      criteria[#criteria + 1] = {path = keys, value = value, quick = quick}
    end
  end
end

-- Whether `v`, a decoded JSON value, is `want` as a criterion compares it.
local function equals(v, want)
  local t = type(v)
  if t == 'string' then
    return v == want
  elseif t == 'number' then
    return tonumber(want) == v
  elseif t == 'boolean' then
    return (v and 'true' or 'false') == want
  elseif v == cjson.null then
    return want == 'null'
  end
  return false
end

-- Whether the payload satisfies one of the criteria.
local function payload_matches(payload)
  if not payload then
    return false
  end
  local doc = nil
  for _, c in ipairs(criteria) do
    local plausible = true
    for _, q in ipairs(c.quick) do
      if not string.find(payload, q, 1, true) then
        plausible = false
        break
      end
    end
    if plausible then
      if doc == nil then
        local ok, d = pcall(cjson.decode, payload)
        if not ok or type(d) ~= 'table' then
          return false
        end
        doc = d
      end
      local v = doc
      for _, key in ipairs(c.path) do
        if type(v) ~= 'table' then
          v = nil
          break
        end
        v = v[key]
      end
      if v ~= nil and equals(v, c.value) then
        return true
      end
    end
  end
  return false
end

local scanned, last, ended = 0, '', 0
local matches = {}
local reviews = {}
local found = 0
local from = ARGV[2]
-- Reads grow from what the caller wants (a page of one reads one entry first) to 100.
local step = math.max(1, math.min(want, 100))
while scanned < budget and found < want do
  local count = math.min(budget - scanned, step)
  step = math.min(step * 4, 100)
  local page
  if desc then
    page = redis.call('XREVRANGE', KEYS[1], from, ARGV[3], 'COUNT', count)
  else
    page = redis.call('XRANGE', KEYS[1], from, ARGV[3], 'COUNT', count)
  end
  for _, e in ipairs(page) do
    scanned = scanned + 1
    last = e[1]
    local flat = e[2]
    -- The criteria's fields only (no table of every field: most entries do not match).
    local class, kind, fp, task, payload = '', '', '', nil, nil
    for j = 1, #flat, 2 do
      local k = flat[j]
      if k == 'class' then
        class = flat[j + 1]
      elseif k == 'kind' then
        kind = flat[j + 1]
      elseif k == 'fingerprint' then
        fp = flat[j + 1]
      elseif k == 'task_id' then
        task = flat[j + 1]
      elseif k == 'payload' then
        payload = flat[j + 1]
      end
    end
    local ok = (not want_class or want_class[class])
      and (not want_kind or want_kind[kind])
      and (not want_fp or want_fp[fp])
      and (not want_task or task == want_task)
      and (not criteria or payload_matches(payload))
    local rstate, rassignee, rraw, rrep
    if ok and RK then
      rstate, rassignee, rraw, rrep = review_of(e[1], fp)
      ok = (not want_state or want_state[rstate])
        and (not want_assignee or want_assignee[rassignee])
        and not (hide_members and rstate == 'folded')
    end
    if ok then
      found = found + 1
      local out = flat
      if only then
        out = {}
        for j = 1, #flat, 2 do
          if only[flat[j]] then
            out[#out + 1] = flat[j]
            out[#out + 1] = flat[j + 1]
          end
        end
      end
      matches[#matches + 1] = e[1]
      matches[#matches + 1] = out
      if RK then
        reviews[#reviews + 1] = rraw
        reviews[#reviews + 1] = rrep or ''
      end
      if found >= want then
        break
      end
    end
  end
  if #page < count then
    ended = 1
    break
  end
  from = '(' .. last
end
return {scanned, last, ended, matches, reviews}

-- dlq_review.lua: one review move on listed dead letters of one tenant — assign (→ in_review,
-- owned by a person), escalate (→ escalated, to the tenant or a named team) or note (the state
-- stays) — with the records' log, in one atomic step; an escalation to the tenant appends its
-- notification to the tenant's outbox in the same step. All keys share the tenant's hash tag.
--
-- KEYS[1]  the tenant's dead-letter stream
-- KEYS[2]  the tenant's review hash (lib/review.lua)
-- KEYS[3]  the tenant's folds (lib/review.lua)
-- KEYS[4]  the tenant's notification outbox, or its '<prefix>:{t}:notify-off' when no target of the tenant wants
--          escalations: then nothing is appended
-- ARGV[1]  the move: 'assign', 'escalate' or 'note'
-- ARGV[2]  assign: the assignee; escalate: 'tenant' or a team's name; note: the note's text
-- ARGV[3]  the operator
-- ARGV[4]  the reason
-- ARGV[5]  the admin command id
-- ARGV[6…] the dead-letter ids
--
-- The outbox is never trimmed here: an event leaves it only once every target had it
-- (notify_ack.lua).
--
-- Every id is checked first: one that does not exist, or that is a member of a fold (its
-- review is its representative's), refuses the whole call and nothing is written. Returns
-- {'refused', {id, why, …}} then ('gone', or 'folded:<representative id>'), else
-- {'ok', {id, outcome, …}} with outcome 'moved' (the state or owner changed; a note: added)
-- or 'same' (already so: nothing written), and the outbox entry's id ('' for none) third.
-- `rv_*` come from lib/review.lua (prepended by the registry).
local act, arg, op, why, cmd = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if act ~= 'assign' and act ~= 'escalate' and act ~= 'note' then
  return redis.error_reply('dlq_review.lua: unknown move ' .. tostring(act))
end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))

-- Pass 1: every id exists and is no fold's member.
local entries, refused = {}, {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 0 then
    refused[#refused + 1] = id
    refused[#refused + 1] = 'gone'
  else
    local fp = rv_fingerprint(e[1][2])
    local rep = fp ~= '' and redis.call('HGET', KEYS[3], fp)
    if rep and rep ~= id then
      refused[#refused + 1] = id
      refused[#refused + 1] = 'folded:' .. rep
    else
      entries[#entries + 1] = {id, e[1][2], fp}
    end
  end
end
if #refused > 0 then
  return {'refused', refused, ''}
end

-- Pass 2: the move.
local out, escalated = {}, {}
for _, item in ipairs(entries) do
  local id, flat, fp = item[1], item[2], item[3]
  local _, r = rv_get(KEYS[2], id)
  local before = r and r.state or nil
  if not r then
    r = {state = 'new', assignee = '', escalated_to = '', fp = fp, since = now, log = {}}
  end
  local entry = {at = now, by = op, act = act, why = why, cmd = cmd}
  local outcome = 'moved'
  if act == 'assign' then
    if r.state == 'in_review' and r.assignee == arg then
      outcome = 'same'
    else
      r.state, r.assignee, r.escalated_to, r.since = 'in_review', arg, '', now
      entry.to = arg
    end
  elseif act == 'escalate' then
    if r.state == 'escalated' and r.escalated_to == arg then
      outcome = 'same'
    else
      r.state, r.escalated_to, r.since = 'escalated', arg, now
      entry.to = arg
      escalated[#escalated + 1] = {id, flat, r}
    end
  else
    entry.text = arg
  end
  if outcome == 'moved' then
    rv_log(r, entry)
    rv_put(KEYS[2], id, r, before)
  end
  out[#out + 1] = id
  out[#out + 1] = outcome
end

-- An escalation to the tenant: one notification for the whole call (at most 100 listed).
local event = ''
if act == 'escalate' and arg == 'tenant' and #escalated > 0 and KEYS[4] and KEYS[4] ~= ''
    and string.sub(KEYS[4], -11) ~= ':notify-off' then
  local list = {}
  for i, x in ipairs(escalated) do
    if i > 100 then
      break
    end
    local f = {}
    for j = 1, #x[2], 2 do
      f[x[2][j]] = x[2][j + 1]
    end
    list[#list + 1] = {
      id = x[1],
      task_id = f['task_id'] or '',
      kind = f['kind'] or '',
      class = f['class'] or '',
      fingerprint = f['fingerprint'] or '',
      error = string.sub(f['error'] or '', 1, 300),
      assignee = x[3].assignee or '',
      folded = (x[3].fold ~= nil and x[3].fold ~= ''),
    }
  end
  local body = cjson.encode({
    dead_letters = list,
    count = #escalated,
    by = op,
    reason = why,
    command = cmd,
  })
  event = redis.call('XADD', KEYS[4], '*', 'type', 'escalated', 'at', now, 'body', body)
end
return {'ok', out, event}

-- notify_tick.lua: one tick of a tenant's notification delivery. The member holding (or
-- taking) the tenant's delivery lease turns what happened since the last tick into outbox
-- events — the open dead-letter digest once its interval is over (one event, however many dead
-- letters), and the breaker's transitions to open and to closed, copied from the breaker's
-- own transition log (written by the same script as each transition) after the state's cursor
-- — and learns where each target stands. All in one atomic step, so an event is appended
-- exactly once and a crash between ticks loses nothing. All keys share the tenant's hash tag.
--
-- KEYS[1]  the tenant's delivery lease (STRING: the member id, expiring)
-- KEYS[2]  the tenant's open dead-letter digest (lib/notify.lua)
-- KEYS[3]  the tenant's outbox (STREAM: type, at, body)
-- KEYS[4]  the tenant's delivery state (HASH: 'c:<target>' cursor, 'a:<target>' attempts,
--          'w:<target>' next try (ms), 'failed:<target>', 'rm'/'rn' the rate window's minute
--          and sends, 'b' the breaker log's cursor)
-- KEYS[5]  the tenant's breaker transition log
-- ARGV[1]  the member
-- ARGV[2]  the lease's time to live, ms
-- ARGV[3]  the digest interval, ms; 0 when no target wants dead letters (nothing collected)
-- ARGV[4]  '1' when a target wants breaker transitions
-- ARGV[5…] the tenant's targets, by name
--
-- Returns {held, now, depth, oldest, sent this minute, per target: cursor, next try, attempts,
-- next event id, its type, its time, its body}; held 0 (another member delivers): nothing else
-- is read or written. The next event is the first after the target's cursor ('' for none).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ts = string.format('%d', now)
local me = ARGV[1]
if not redis.call('SET', KEYS[1], me, 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) ~= me then
    return {0, ts, 0, '', 0}
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end

-- The dead-letter digest, once its interval is over.
local interval = tonumber(ARGV[3]) or 0
if interval > 0 then
  local d = redis.call('HGETALL', KEYS[2])
  if #d > 0 then
    local f = {}
    for i = 1, #d, 2 do
      f[d[i]] = d[i + 1]
    end
    local since = tonumber(f['since']) or now
    if (tonumber(f['n']) or 0) > 0 and now - since >= interval then
      local by_class, samples = {}, {}
      for k, v in pairs(f) do
        if string.sub(k, 1, 2) == 'c:' then
          by_class[string.sub(k, 3)] = tonumber(v)
        end
      end
      for i = 1, 5 do
        local s = f['s' .. i]
        if s then
          local ok, v = pcall(cjson.decode, s)
          if ok then
            samples[#samples + 1] = v
          end
        end
      end
      local body = cjson.encode({
        count = tonumber(f['n']),
        since = f['since'],
        ['until'] = ts,
        first_id = f['first'] or '',
        last_id = f['last'] or '',
        by_class = by_class,
        samples = samples,
      })
      redis.call('XADD', KEYS[3], '*', 'type', 'dead_lettered', 'at', ts, 'body', body)
      redis.call('DEL', KEYS[2])
    end
  end
end

-- Breaker transitions to open and to closed, after the cursor.
if ARGV[4] == '1' then
  local cursor = redis.call('HGET', KEYS[4], 'b')
  if not cursor then
    -- The first tick starts at the log's end: transitions from before are history.
    local last = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)
    redis.call('HSET', KEYS[4], 'b', (#last > 0) and last[1][1] or '0-0')
  else
    local gap = false
    if cursor ~= '0-0' and #redis.call('XRANGE', KEYS[5], cursor, cursor) == 0 then
      -- The cursor's own entry was trimmed from the log: newer ones may have gone with it.
      gap = #redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 1) > 0
    end
    local page = redis.call('XRANGE', KEYS[5], '(' .. cursor, '+', 'COUNT', 100)
    for _, e in ipairs(page) do
      local f = {}
      for j = 1, #e[2], 2 do
        f[e[2][j]] = e[2][j + 1]
      end
      local kind = nil
      if f['to'] == 'open' and f['from'] ~= 'open' then
        kind = 'breaker_opened'
      elseif f['to'] == 'closed' and f['from'] ~= 'closed' then
        kind = 'breaker_closed'
      end
      if kind then
        local body = {
          from = f['from'] or '',
          to = f['to'] or '',
          reason = f['reason'] or '',
          detail = f['detail'] or '',
          by = f['by'] or '',
          at = string.match(e[1], '^(%d+)') or '',
          transition = e[1],
        }
        if gap then
          body.gap = true
          gap = false
        end
        redis.call('XADD', KEYS[3], '*', 'type', kind, 'at', ts, 'body', cjson.encode(body))
      end
      cursor = e[1]
    end
    redis.call('HSET', KEYS[4], 'b', cursor)
  end
end

-- Where the outbox and each target stand.
local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
local minute = string.format('%d', math.floor(now / 60000))
local rate = redis.call('HMGET', KEYS[4], 'rm', 'rn')
local sent = (rate[1] == minute) and (tonumber(rate[2]) or 0) or 0
local out = {1, ts, redis.call('XLEN', KEYS[3]), (#first > 0) and first[1][1] or '', sent}
for i = 5, #ARGV do
  local name = ARGV[i]
  local s = redis.call('HMGET', KEYS[4], 'c:' .. name, 'w:' .. name, 'a:' .. name)
  local cursor = s[1] or '0-0'
  out[#out + 1] = cursor
  out[#out + 1] = s[2] or '0'
  out[#out + 1] = s[3] or '0'
  local nxt = redis.call('XRANGE', KEYS[3], '(' .. cursor, '+', 'COUNT', 1)
  if #nxt > 0 then
    local f = {}
    for j = 1, #nxt[1][2], 2 do
      f[nxt[1][2][j]] = nxt[1][2][j + 1]
    end
    out[#out + 1] = nxt[1][1]
    out[#out + 1] = f['type'] or ''
    out[#out + 1] = f['at'] or ''
    out[#out + 1] = f['body'] or ''
  else
    out[#out + 1] = ''
    out[#out + 1] = ''
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out

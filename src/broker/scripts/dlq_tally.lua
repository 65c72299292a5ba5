-- dlq_tally.lua: counts one page of a tenant's dead letters by class, kind and fingerprint on
-- the server, so `dlq stats` and `health` move counts instead of payloads. Read-only; the page
-- size bounds the work of one call.
--
-- KEYS[1]  the tenant's dead-letter stream
-- ARGV[1]  where the page starts: '-', an id, or an exclusive '(id'
-- ARGV[2]  where the scan ends: '+' or an id (inclusive)
-- ARGV[3]  the page size
-- ARGV[4]  a JSON filter {"classes": […], "kinds": […], "fingerprints": […]}; a missing or
--          empty list accepts anything, a non-empty one needs the field to equal one value
--
-- Returns {next, scanned, matched, oldest, classes, kinds, fingerprints}: next is the start of
-- the following page or '' at the end; oldest is the first matching id or ''; classes and kinds
-- are flat name, count, …; fingerprints is flat fingerprint, count, class, kind, error, … with
-- the error of the first entry seen as the sample.
local filter = cjson.decode(ARGV[4])
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
local want_class, want_kind, want_fp = set(filter.classes), set(filter.kinds), set(filter.fingerprints)
local page = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
local classes, kinds, fps = {}, {}, {}
local class_order, kind_order, fp_order = {}, {}, {}
local matched = 0
local oldest = ''
for _, e in ipairs(page) do
  local f = {}
  local flat = e[2]
  for j = 1, #flat, 2 do
    f[flat[j]] = flat[j + 1]
  end
  local class, kind, fp = f['class'] or '', f['kind'] or '', f['fingerprint'] or ''
  local ok = (not want_class or want_class[class]) and (not want_kind or want_kind[kind])
    and (not want_fp or want_fp[fp])
  if ok then
    matched = matched + 1
    if oldest == '' then
      oldest = e[1]
    end
    if not classes[class] then
      classes[class] = 0
      class_order[#class_order + 1] = class
    end
    classes[class] = classes[class] + 1
    if not kinds[kind] then
      kinds[kind] = 0
      kind_order[#kind_order + 1] = kind
    end
    kinds[kind] = kinds[kind] + 1
    if not fps[fp] then
      fps[fp] = {0, class, kind, f['error'] or ''}
      fp_order[#fp_order + 1] = fp
    end
    fps[fp][1] = fps[fp][1] + 1
  end
end
local c, k, p = {}, {}, {}
for _, name in ipairs(class_order) do
  c[#c + 1] = name
  c[#c + 1] = classes[name]
end
for _, name in ipairs(kind_order) do
  k[#k + 1] = name
  k[#k + 1] = kinds[name]
end
for _, name in ipairs(fp_order) do
  local v = fps[name]
  p[#p + 1] = name
  p[#p + 1] = v[1]
  p[#p + 1] = v[2]
  p[#p + 1] = v[3]
  p[#p + 1] = v[4]
end
local next = ''
if #page >= tonumber(ARGV[3]) then
  next = '(' .. page[#page][1]
end
return {next, #page, matched, oldest, c, k, p}

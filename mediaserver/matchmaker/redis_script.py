"""The Redis matchmaker's one Lua script: every queue operation of a call runs in it,
atomically, so two nodes never pair one waiter twice (see redis.py for the keys).

It lives apart from the Python that calls it because it is another language, read
and changed on its own.
"""

QUEUE_SCRIPT = r"""
-- ARGV: prefix, interest wait, node id, channel, due batch size, then the
-- operations, each as: name, now, argument count, arguments...
local P = ARGV[1]
local W = tonumber(ARGV[2])
local NODE = ARGV[3]
local CHANNEL = ARGV[4]
local DUE_LIMIT = tonumber(ARGV[5])
local now = 0  -- the clock() of the operation being run

local Q = P .. 'q'
local OPEN = P .. 'open'
local DUE = P .. 'due'

local function fmt(x) return string.format('%.17g', x) end
local function tkey(peer) return P .. 't:' .. peer end
local function ckey(a, b) return P .. 'c:' .. #a .. ':' .. a .. b end

-- Reading a sorted set in arrival order, a page at a time (most scans stop at
-- the first waiter).
local function cursor(key) return {key = key, buf = {}, pos = 1, off = 0, n = 4, done = false} end
local function head(c)
  if c.pos > #c.buf then
    if c.done then return nil end
    local r = redis.call('ZRANGE', c.key, c.off, c.off + c.n - 1, 'WITHSCORES')
    c.off = c.off + c.n
    if #r < 2 * c.n then c.done = true end
    if c.n < 256 then c.n = c.n * 4 end
    c.buf = r
    c.pos = 1
    if #r == 0 then return nil end
  end
  return c.buf[c.pos], tonumber(c.buf[c.pos + 1])
end

-- The oldest waiter in the sets `keys` that identity `myid` may meet now:
-- returns its peer and arrival number (or nil), and the earliest end of the
-- skips/blocks that made the scan pass over waiters (or nil).
local function scan(keys, myid)
  local cs = {}
  for i, k in ipairs(keys) do cs[i] = cursor(k) end
  local cend = nil
  local last = nil
  while true do
    local bc, bp, bs = nil, nil, nil
    for _, c in ipairs(cs) do
      local p, s = head(c)
      if p and (bs == nil or s < bs) then bc, bp, bs = c, p, s end
    end
    if bc == nil then return nil, nil, cend end
    bc.pos = bc.pos + 2
    if bs ~= last then
      last = bs
      local id = redis.call('HGET', tkey(bp), 'id')
      if id and id ~= myid then
        local u = redis.call('GET', ckey(myid, id))
        local untl = u and tonumber(u)
        if untl and untl > now then
          if cend == nil or untl < cend then cend = untl end
        else
          return bp, bs, cend
        end
      end
    end
  end
end

local function keys_of(toks)
  local ks = {}
  for i, tok in ipairs(toks) do ks[i] = P .. 'k:' .. tok end
  return ks
end

local function sources(open, toks)
  local ks = keys_of(toks)
  if open then table.insert(ks, 1, OPEN) end
  return ks
end

local function toks_of(peer)
  local k = redis.call('HGET', tkey(peer), 'k')
  if k == false then return nil end
  if k == '' then return {} end
  return cjson.decode(k)
end

local function remove(peer, toks)
  toks = toks or toks_of(peer)
  if toks == nil then return false end
  for _, tok in ipairs(toks) do redis.call('ZREM', P .. 'k:' .. tok, peer) end
  redis.call('ZREM', Q, peer)
  redis.call('ZREM', OPEN, peer)
  redis.call('ZREM', DUE, peer)
  redis.call('DEL', tkey(peer))
  return true
end

local function shared(t1, t2)
  local seen = {}
  for _, tok in ipairs(t1) do seen[tok] = true end
  local out = {}
  for _, tok in ipairs(t2) do
    if seen[tok] and string.sub(tok, 1, 2) == 'i:' then out[#out + 1] = string.sub(tok, 3) end
  end
  return out
end

local function schedule(peer, open, t0, cend)
  local at = cend
  if not open then
    local we = t0 + W
    if at == nil or we < at then at = we end
  end
  if at ~= nil then redis.call('ZADD', DUE, fmt(at), peer) end
end

-- Pair the waiters whose recheck is due, greedily, oldest pair first (see
-- memory.py _run_due). Returns how many due waiters it looked at.
local function run_due(out)
  local peers = redis.call('ZRANGEBYSCORE', DUE, '-inf', fmt(now), 'LIMIT', 0, DUE_LIMIT)
  if #peers == 0 then return 0 end
  local ws = {}
  for _, p in ipairs(peers) do
    redis.call('ZREM', DUE, p)
    local v = redis.call('HMGET', tkey(p), 'id', 's', 't', 'k', 'o')
    if v[1] then
      local toks = {}
      if v[4] ~= '' then toks = cjson.decode(v[4]) end
      ws[#ws + 1] = {peer = p, id = v[1], seq = tonumber(v[2]), t0 = tonumber(v[3]),
                     toks = toks, open = (v[5] == '1')}
    end
  end
  table.sort(ws, function(x, y) return x.seq < y.seq end)
  for _, w in ipairs(ws) do
    if not w.open and now >= w.t0 + W then
      w.open = true
      redis.call('ZADD', OPEN, w.seq, w.peer)
      redis.call('HSET', tkey(w.peer), 'o', '1')
    end
  end
  local dead = {}
  local cand = {}
  local cends = {}
  while true do
    local bi, k1, k2 = nil, nil, nil
    for i, w in ipairs(ws) do
      if not dead[w.peer] then
        local c = cand[i]
        if c and dead[c[1]] then c = nil end
        if c == nil then
          local p, s, cend = scan(sources(w.open, w.toks), w.id)
          if p then c = {p, s} else c = false; cends[i] = cend end
          cand[i] = c
        end
        if c then
          local a, b = w.seq, c[2]
          if b < a then a, b = b, a end
          if bi == nil or a < k1 or (a == k1 and b < k2) then bi, k1, k2 = i, a, b end
        end
      end
    end
    if bi == nil then break end
    local w = ws[bi]
    local c = cand[bi]
    local ptoks = toks_of(c[1])
    remove(w.peer, w.toks)
    remove(c[1], ptoks)
    dead[w.peer] = true
    dead[c[1]] = true
    if w.seq < c[2] then
      out[#out + 1] = {w.peer, c[1], shared(w.toks, ptoks)}
    else
      out[#out + 1] = {c[1], w.peer, shared(ptoks, w.toks)}
    end
  end
  for i, w in ipairs(ws) do
    if not dead[w.peer] then schedule(w.peer, w.open, w.t0, cends[i]) end
  end
  return #peers
end

local function enqueue(a, out)
  -- a: peer, identity, reputation, tokens... ('i:' interest, 'l:' language)
  local peer, id, rep = a[1], a[2], a[3]
  remove(peer)
  local x = redis.call('GET', P .. 'x:' .. rep)
  if x and tonumber(x) > now then return 'refused' end
  run_due(out)
  local toks = {}
  for i = 4, #a do toks[#toks + 1] = a[i] end
  local open = (#toks == 0) or (now >= now + W)
  local seq = redis.call('INCR', P .. 'seq')
  local p, _, cend = scan(sources(open, toks), id)
  if p then
    local ptoks = toks_of(p)
    remove(p, ptoks)
    out[#out + 1] = {p, peer, shared(ptoks, toks)}
  else
    local enc = ''
    if #toks > 0 then enc = cjson.encode(toks) end
    redis.call('HSET', tkey(peer), 'id', id, 's', seq, 't', fmt(now), 'k', enc,
               'o', open and '1' or '0')
    redis.call('ZADD', Q, seq, peer)
    if open then redis.call('ZADD', OPEN, seq, peer) end
    for _, k in ipairs(keys_of(toks)) do redis.call('ZADD', k, seq, peer) end
    schedule(peer, open, now, cend)
  end
  return 'ok'
end

local function index_conflict(a, b, px)
  local ik = P .. 'ci:' .. a
  redis.call('SADD', ik, b)
  if redis.call('PTTL', ik) < tonumber(px) then redis.call('PEXPIRE', ik, px) end
end

local function conflict(a)
  -- a: identity, other identity, until, px
  local untl = tonumber(a[3])
  for _, k in ipairs({ckey(a[1], a[2]), ckey(a[2], a[1])}) do
    local cur = redis.call('GET', k)
    if not cur or tonumber(cur) < untl then redis.call('SET', k, a[3], 'PX', a[4]) end
  end
  index_conflict(a[1], a[2], a[4])
  index_conflict(a[2], a[1], a[4])
  return 'ok'
end

local function forget(a)
  -- a: identity (its visit ended)
  local ik = P .. 'ci:' .. a[1]
  for _, o in ipairs(redis.call('SMEMBERS', ik)) do
    redis.call('DEL', ckey(a[1], o), ckey(o, a[1]))
    redis.call('SREM', P .. 'ci:' .. o, a[1])
  end
  redis.call('DEL', ik)
  return 'ok'
end

local function report(a)
  -- a: reporter, reported, now - window, window px, threshold, refused until, its px
  local rk = P .. 'r:' .. a[2]
  redis.call('ZADD', rk, fmt(now), a[1])
  redis.call('ZREMRANGEBYSCORE', rk, '-inf', a[3])
  redis.call('PEXPIRE', rk, a[4])
  local n = redis.call('ZCARD', rk)
  if n >= tonumber(a[5]) then redis.call('SET', P .. 'x:' .. a[2], a[6], 'PX', a[7]) end
  return tostring(n)
end

local out = {}
local results = {''}
local i = 6
while i <= #ARGV do
  local op = ARGV[i]
  now = tonumber(ARGV[i + 1])
  local n = tonumber(ARGV[i + 2])
  local a = {}
  for j = 1, n do a[j] = ARGV[i + 2 + j] end
  i = i + 3 + n
  local r
  if op == 'enqueue' then r = enqueue(a, out)
  elseif op == 'tick' then r = tostring(run_due(out))
  elseif op == 'cancel' then remove(a[1]); r = 'ok'
  elseif op == 'conflict' then r = conflict(a)
  elseif op == 'report' then r = report(a)
  elseif op == 'forget' then r = forget(a)
  else return redis.error_reply('unknown matchmaker op ' .. tostring(op)) end
  results[#results + 1] = r
end
-- One message per call, whatever the number of matches: the first line names
-- the node, so that it can skip its own.
if #out > 0 then
  results[1] = cjson.encode(out)
  if CHANNEL ~= '' then redis.call('PUBLISH', CHANNEL, NODE .. '\n' .. results[1]) end
end
return results
"""

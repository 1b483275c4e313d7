package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts: each runs atomically on the Redis server, so no other
// replica's command comes between its reads and its writes. Times are Unix
// milliseconds. A request's hash holds its record (d), a version (v), and
// the fields the scripts read: status (s), client (c), expiry (x), base
// interval (i), claim deadline (cu), and the polling state: last poll (pl)
// and current interval (pi). The pending requests are counted in
// {prefix}pending, indexed by expiry in {prefix}expiry (member: the raw
// request key, followed by the raw user key when it has a user) and by
// creation per user in {prefix}u:{user} (member: the raw request key). An
// outbox item is a hash {prefix}o:{kind}:{key} (sender snd, payload p,
// not after na, next attempt n, lease until lu, attempts a, last error
// e; each time twice: in milliseconds for the scripts, exactly in
// nanoseconds for the reader: nan, nn, lun), indexed by the time a worker
// must look at it in {prefix}q:{kind}. A request's expiry is kept exactly
// in xn too.

// luaHex is the hexadecimal form of a raw key, as the Go side names keys.
const luaHex = `
local function hex(s)
  return (s:gsub('.', function(c) return string.format('%02x', string.byte(c)) end))
end
`

// luaPutItems writes the items that follow ARGV[i] (their count, then
// nine values each: kind, sender, payload, not after, next (each in
// milliseconds and exactly, in nanoseconds), TTL, due) for the request
// whose key is raw and hex; p is the prefix.
const luaPutItems = `
local function putItems(p, i, raw, hexkey)
  local n = tonumber(ARGV[i])
  for j = 0, n - 1 do
    local b = i + 1 + j * 9
    local kind = ARGV[b]
    local ik = p .. 'o:' .. kind .. ':' .. hexkey
    redis.call('DEL', ik)
    redis.call('HSET', ik, 'snd', ARGV[b + 1], 'p', ARGV[b + 2], 'na', ARGV[b + 3], 'nan', ARGV[b + 4],
      'n', ARGV[b + 5], 'nn', ARGV[b + 6], 'lu', 0, 'lun', 0, 'a', 0, 'e', '')
    redis.call('PEXPIRE', ik, ARGV[b + 7])
    redis.call('ZADD', p .. 'q:' .. kind, ARGV[b + 8], raw)
  end
end
`

// createScript stores a new request, counts it as pending within its
// user's limit (replacing the oldest pending request of the user when
// asked: it expires when the new one is created, its items dropped), and
// stores its links and items. ARGV: prefix, key hex, key raw, record,
// status, client, expires, interval, TTL, created, user hex, user raw,
// max, replace, created (ns), grace, expires (ns), then the kinds (count,
// codes), the links (count, hex keys), the items. It answers ok, exists
// or limit.
var createScript = redis.NewScript(luaHex + luaPutItems + `
local p, keyhex, raw = ARGV[1], ARGV[2], ARGV[3]
local rk = p .. 'r:' .. keyhex
if redis.call('EXISTS', rk) == 1 then return 'exists' end
local i = 18
local kinds = {}
for j = 1, tonumber(ARGV[i]) do kinds[j] = ARGV[i + j] end
i = i + #kinds + 1
local userhex, userraw = ARGV[11], ARGV[12]
if ARGV[5] == '1' then
  if userhex ~= '' then
    local uk = p .. 'u:' .. userhex
    local max = tonumber(ARGV[13])
    if max > 0 and redis.call('ZCARD', uk) >= max then
      if ARGV[14] ~= '1' then return 'limit' end
      local old = redis.call('ZRANGE', uk, 0, 0)[1]
      if not old then return 'limit' end
      redis.call('ZREM', uk, old)
      if redis.call('ZREM', p .. 'expiry', old .. userraw) == 1 then
        redis.call('DECR', p .. 'pending')
      end
      local oldhex = hex(old)
      local ork = p .. 'r:' .. oldhex
      if redis.call('EXISTS', ork) == 1 then
        redis.call('HSET', ork, 'x', ARGV[10], 'xn', ARGV[15])
        redis.call('PEXPIRE', ork, ARGV[16])
      end
      for _, kind in ipairs(kinds) do
        if redis.call('DEL', p .. 'o:' .. kind .. ':' .. oldhex) == 1 then
          redis.call('ZREM', p .. 'q:' .. kind, old)
        end
      end
    end
    redis.call('ZADD', uk, ARGV[10], raw)
  end
  redis.call('ZADD', p .. 'expiry', ARGV[7], raw .. userraw)
  redis.call('INCR', p .. 'pending')
end
redis.call('HSET', rk, 'd', ARGV[4], 's', ARGV[5], 'c', ARGV[6], 'x', ARGV[7], 'xn', ARGV[17], 'i', ARGV[8], 'cu', 0, 'v', 1)
redis.call('PEXPIRE', rk, ARGV[9])
local nl = tonumber(ARGV[i])
for j = 1, nl do
  redis.call('SET', p .. 'l:' .. ARGV[i + j], raw, 'PX', ARGV[9])
end
putItems(p, i + nl + 1, raw, keyhex)
return 'ok'
`)

// updateScript writes a request read at version ARGV[4], unless another
// write came since (conflict), and takes it out of the pending counts
// when it stops being pending. ARGV: prefix, key hex, key raw, version,
// record, status, client, expires, interval, claim deadline, TTL,
// uncount (1 or 0), user raw, user hex, expires (ns), then the items. It
// answers ok, notfound or conflict.
var updateScript = redis.NewScript(luaPutItems + `
local p, keyhex, raw = ARGV[1], ARGV[2], ARGV[3]
local rk = p .. 'r:' .. keyhex
local v = redis.call('HGET', rk, 'v')
if not v then return 'notfound' end
if v ~= ARGV[4] then return 'conflict' end
redis.call('HSET', rk, 'd', ARGV[5], 's', ARGV[6], 'c', ARGV[7], 'x', ARGV[8], 'xn', ARGV[15], 'i', ARGV[9], 'cu', ARGV[10], 'v', tonumber(v) + 1)
redis.call('PEXPIRE', rk, ARGV[11])
if ARGV[12] == '1' and redis.call('ZREM', p .. 'expiry', raw .. ARGV[13]) == 1 then
  redis.call('DECR', p .. 'pending')
  if ARGV[14] ~= '' then redis.call('ZREM', p .. 'u:' .. ARGV[14], raw) end
end
putItems(p, 16, raw, keyhex)
return 'ok'
`)

// sweepScript stops counting up to ARGV[3] pending requests that expired
// by ARGV[2] and answers how many. ARGV[1] is the prefix.
var sweepScript = redis.NewScript(luaHex + `
local p = ARGV[1]
local xs = redis.call('ZRANGEBYSCORE', p .. 'expiry', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(xs) do
  redis.call('ZREM', p .. 'expiry', m)
  redis.call('DECR', p .. 'pending')
  if #m > 32 then
    redis.call('ZREM', p .. 'u:' .. hex(string.sub(m, 33)), string.sub(m, 1, 32))
  end
end
return #xs
`)

// luaVolatile makes the writes of a script stay in the server's memory:
// not in its append-only file, not sent to its replicas. The polling state
// is such: losing it to a restart or a failover costs at most one poll
// that is not slow_down, and keeping it out of the append-only file spares
// every poll an fsync.
const luaVolatile = `
redis.replicate_commands()
redis.set_repl(redis.REPL_NONE)
`

// pollScript reads what a poll needs of the request KEYS[1] and, for a
// poll by its client (ARGV[1]) at ARGV[2] of a request pending or approved
// and unexpired, applies the slow_down rules: a poll earlier than the last
// one plus the interval (less ARGV[3] per mille), or one that overlaps the
// minting of the tokens (an unexpired claim), is slow_down and raises the
// interval by ARGV[4], up to ARGV[5]. It answers {0} for an unknown
// request, else {1, client, status, expires, base interval, reason}. Its
// writes are volatile.
var pollScript = redis.NewScript(luaVolatile + `
local f = redis.call('HMGET', KEYS[1], 'c', 's', 'x', 'i', 'cu', 'pl', 'pi')
if not f[1] then return {0} end
local status, expires, base = tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
local now = tonumber(ARGV[2])
if f[1] ~= ARGV[1] or (status ~= 1 and status ~= 2) or now >= expires then
  return {1, f[1], status, f[3], base, ''}
end
local interval = tonumber(f[7]) or base
local last = tonumber(f[6])
local early = last ~= nil and now < last + interval - math.floor(interval * tonumber(ARGV[3]) / 1000)
local overlap = status == 2 and tonumber(f[5] or 0) > now
redis.call('HSET', KEYS[1], 'pl', ARGV[2])
local reason = ''
if early or overlap then
  redis.call('HSET', KEYS[1], 'pi', math.min(interval + tonumber(ARGV[4]), tonumber(ARGV[5])))
  if overlap then reason = 'overlap' else reason = 'early' end
end
return {1, f[1], status, f[3], base, reason}
`)

// slowDownScript raises the current interval of the request KEYS[1] by
// ARGV[1], up to ARGV[2], as a slow_down answer does; volatile, as the
// poll's.
var slowDownScript = redis.NewScript(luaVolatile + `
local f = redis.call('HMGET', KEYS[1], 'i', 'pi')
if not f[1] then return 0 end
local interval = tonumber(f[2]) or tonumber(f[1])
redis.call('HSET', KEYS[1], 'pi', math.min(interval + tonumber(ARGV[1]), tonumber(ARGV[2])))
return 1
`)

// enqueueScript queues an item, replacing one with its ID. KEYS: the
// item, the due index of its kind; ARGV: sender, payload, not after,
// next, lease until (each in ms, then ns), attempts, last error, TTL, due,
// request key raw.
var enqueueScript = redis.NewScript(`
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'snd', ARGV[1], 'p', ARGV[2], 'na', ARGV[3], 'nan', ARGV[4], 'n', ARGV[5], 'nn', ARGV[6],
  'lu', ARGV[7], 'lun', ARGV[8], 'a', ARGV[9], 'e', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ARGV[11])
redis.call('ZADD', KEYS[2], ARGV[12], ARGV[13])
return 1
`)

// leaseScript takes the item KEYS[1] for delivery until ARGV[2] (ARGV[4]
// in ns) if it is due at ARGV[1] (ARGV[5] in ns: next attempt come, not
// leased), counting an attempt, and
// moves it in the due index KEYS[2] (member ARGV[3]) to when its lease
// ends (or it expires, if sooner). It answers notfound, notdue, or the
// item's fields.
var leaseScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'n', 'lu', 'na', 'a', 'nn', 'lun')
if not f[3] then return 'notfound' end
local now = tonumber(ARGV[1])
-- before reports whether now is before a time given in ms and, to tell
-- two times of one millisecond apart, in ns (decimal, not negative).
local function before(ms, ns)
  if now ~= tonumber(ms) then return now < tonumber(ms) end
  if #ARGV[5] ~= #ns then return #ARGV[5] < #ns end
  return ARGV[5] < ns
end
if before(f[1], f[5]) or before(f[2], f[6]) then return 'notdue' end
redis.call('HSET', KEYS[1], 'lu', ARGV[2], 'lun', ARGV[4], 'a', tonumber(f[4]) + 1)
local due = math.max(tonumber(f[1]), tonumber(ARGV[2]))
if tonumber(f[3]) < due then due = tonumber(f[3]) end
redis.call('ZADD', KEYS[2], due, ARGV[3])
return redis.call('HGETALL', KEYS[1])
`)

// retryScript records a failed attempt of the item KEYS[1]: its lease
// released, its next attempt at ARGV[1] (ARGV[4] in ns), its last error
// ARGV[2]; its due index KEYS[2] (member ARGV[3]) follows. It answers
// notfound or ok.
var retryScript = redis.NewScript(`
local na = redis.call('HGET', KEYS[1], 'na')
if not na then return 'notfound' end
redis.call('HSET', KEYS[1], 'lu', 0, 'lun', 0, 'n', ARGV[1], 'nn', ARGV[4], 'e', ARGV[2])
local due = tonumber(ARGV[1])
if tonumber(na) < due then due = tonumber(na) end
redis.call('ZADD', KEYS[2], due, ARGV[3])
return 'ok'
`)

// rateScript counts an event at ARGV[1] of the key KEYS[1], allowing
// ARGV[3] events in any ARGV[2] milliseconds (a sliding-window log: the
// bound is exact); ARGV[4] makes the event's member unique. It answers
// {1, 0} when allowed, else {0, the milliseconds until the next event is}.
var rateScript = redis.NewScript(`
local now, window, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < n then
  redis.call('ZADD', KEYS[1], now, ARGV[1] .. ':' .. ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
`)

// rateCheckScript looks at the limits KEYS at ARGV[1], the window and the
// number of events of KEYS[i] in ARGV[2i] and ARGV[2i+1], as rateScript
// counts them, writing nothing. It answers {1, 0} when one more event
// would be within every limit, else {0, the milliseconds until it would}.
var rateCheckScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local ok, wait = 1, 0
for i, key in ipairs(KEYS) do
  local window, n = tonumber(ARGV[2*i]), tonumber(ARGV[2*i+1])
  local from = '(' .. (now - window)
  local count = redis.call('ZCOUNT', key, from, '+inf')
  if count >= n then
    ok = 0
    local at = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', count - n, 1)
    local w = tonumber(at[2]) + window - now
    if w > wait then wait = w end
  end
end
return {ok, wait}
`)

-- One window of a failed registry, resuming right after the last entry of the previous window
-- that is still there, at its rank now: the rank lookup and the range are one atomic step, so
-- entries removed meanwhile (by this instance, another one or an operator) shift nothing and
-- none is skipped. When every anchor was removed (removals overtook the listing), it resumes
-- right after where the last listed entry was: after every entry ordered before it by
-- (score, member), as Redis orders a sorted set. Reads only.
--
-- KEYS[1]  the failed registry (a sorted set)
-- ARGV[1]  how many entries
-- ARGV[2]  "1": highest score first (ZREVRANK / ZRANGE REV); else lowest first
-- ARGV[3]  the score of the last listed entry (ARGV[4]), exactly as Redis parses it
-- ARGV[4..] anchors: the previous window's last members, last first
local key = KEYS[1]
local count = tonumber(ARGV[1])
local rev = ARGV[2] == '1'
local score = ARGV[3]
local last = ARGV[4]
local rank = rev and 'ZREVRANK' or 'ZRANK'
local start = nil
-- Whether member a sorts before b as Redis sorts equal scores: byte by byte (not Lua's `<`,
-- which follows the server's locale).
local function before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end
for i = 4, #ARGV do
  local r = redis.call(rank, key, ARGV[i])
  if r then
    start = r + 1
    break
  end
end
if not start then
  -- Every entry with a score before the last one's comes before it; of those with its very
  -- score (RQ's scores are whole seconds: thousands can share one), the members up to it.
  local page, offset, same = 1000, 0, nil
  if rev then
    start = redis.call('ZCOUNT', key, '(' .. score, '+inf')
  else
    start = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  end
  repeat
    if rev then
      same = redis.call('ZREVRANGEBYSCORE', key, score, score, 'LIMIT', offset, page)
    else
      same = redis.call('ZRANGEBYSCORE', key, score, score, 'LIMIT', offset, page)
    end
    for _, member in ipairs(same) do
      -- The first member that comes after the last listed one, in this direction.
      if (rev and before(member, last)) or (not rev and before(last, member)) then
        same = {}
        break
      end
      start = start + 1
    end
    offset = offset + page
  until #same < page
end
if rev then
  return redis.call('ZRANGE', key, start, start + count - 1, 'REV', 'WITHSCORES')
end
return redis.call('ZRANGE', key, start, start + count - 1, 'WITHSCORES')

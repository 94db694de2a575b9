-- One window of a failed registry, resuming right after the last entry of the previous window
-- that is still there, at its rank now: the rank lookup and the range are one atomic step, so
-- entries removed meanwhile (by this instance, another one or an operator) shift nothing and
-- none is skipped. Reads only.
--
-- KEYS[1]  the failed registry (a sorted set)
-- ARGV[1]  how many entries
-- ARGV[2]  "1": highest score first (ZREVRANK / ZRANGE REV); else lowest first
-- ARGV[3]  the rank to start at when none of the anchors is there any more
-- ARGV[4..] anchors: the previous window's last members, last first
local key = KEYS[1]
local count = tonumber(ARGV[1])
local rev = ARGV[2] == '1'
local start = tonumber(ARGV[3])
local rank = rev and 'ZREVRANK' or 'ZRANK'
for i = 4, #ARGV do
  local r = redis.call(rank, key, ARGV[i])
  if r then
    start = r + 1
    break
  end
end
if rev then
  return redis.call('ZRANGE', key, start, start + count - 1, 'REV', 'WITHSCORES')
end
return redis.call('ZRANGE', key, start, start + count - 1, 'WITHSCORES')

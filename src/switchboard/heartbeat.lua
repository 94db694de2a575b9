-- One instance's heartbeat: take the lease when it is free, renew it when it is ours, and read
-- the shared switches, in one atomic step (one round trip per beat).
--
-- KEYS[1] rq-retryd's switches hash (<prefix>:retryd:switches)
-- KEYS[2] the active-instance lease (<prefix>:retryd:lease; a string holding the holder's token)
-- ARGV[1] this instance's token, or "" when it does not take part in the election (it then only
--   reads), ARGV[2] the lease time in milliseconds
-- Returns {holder, pttl, switches}:
--   holder   the lease's token after this beat (false when nobody holds it), or the integer -1
--            when the lease key is not a string (no write: nobody is active until it is fixed)
--   pttl     the lease's remaining milliseconds (-2 when there is none)
--   switches the switches hash as a flat HGETALL list, or the integer -1 when the key is not a
--            hash (instances then act as paused: the write scripts' gate refuses)
-- The only writes are SET NX-like (on a key checked to be absent) and PEXPIRE of our own lease.
local switches
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'hash' then
  switches = redis.call('HGETALL', KEYS[1])
elseif t == 'none' then
  switches = {}
else
  switches = -1
end
t = redis.call('TYPE', KEYS[2]).ok
if t ~= 'string' and t ~= 'none' then
  return {-1, -2, switches}
end
if ARGV[1] ~= '' then
  if t == 'none' then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  elseif redis.call('GET', KEYS[2]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return {redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[2]), switches}

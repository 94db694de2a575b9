-- One instance's heartbeat: take the lease when it is free, renew it when it is ours, and read
-- the shared switches, in one atomic step and as few commands as possible (standbys beat all
-- the time: their Redis load must stay small next to the active instance's scans).
--
-- KEYS[1] rq-retryd's switches hash (<prefix>:retryd:switches)
-- KEYS[2] the active-instance lease (<prefix>:retryd:lease; a string holding the holder's token)
-- ARGV[1] this instance's token, or "" when it does not take part in the election (it then only
--   reads), ARGV[2] the lease time in milliseconds
-- Returns {holder, pttl, switches}:
--   holder   the lease's token after this beat (false when nobody holds it), or the integer -1
--            when the lease key is not a string (no write: nobody is active until it is fixed)
--   pttl     the lease's remaining milliseconds when this beat took or renewed it, else -2
--   switches the switches hash as a flat HGETALL list, or the integer -1 when the key is not a
--            hash (instances then act as paused: the write scripts' gate refuses)
-- Reads run under pcall, so a key of the wrong type is an answer, not an error; the only
-- writes (SET NX, PEXPIRE of our own lease) come after them and cannot fail on data.
local switches = redis.pcall('HGETALL', KEYS[1])
if switches.err then
  switches = -1
end
local holder = redis.pcall('GET', KEYS[2])
if type(holder) == 'table' and holder.err then
  return {-1, -2, switches}
end
local token, ttl = ARGV[1], ARGV[2]
if token ~= '' then
  if not holder then
    redis.call('SET', KEYS[2], token, 'PX', ttl, 'NX')
    return {token, tonumber(ttl), switches}
  elseif holder == token then
    redis.call('PEXPIRE', KEYS[2], ttl)
    return {token, tonumber(ttl), switches}
  end
end
return {holder, -2, switches}

-- The gate: the shared prologue of every write script (the executor prepends it), so that the
-- switches every instance obeys are checked in the same atomic step as the write itself: a
-- pause answered by any instance stops every instance's next script call, and only the instance
-- holding the lease writes automatically, even one that has not yet noticed it lost the lease.
--
-- KEYS[1] rq-retryd's switches hash (<prefix>:retryd:switches; field `paused` = "1")
-- KEYS[2] the active-instance lease (<prefix>:retryd:lease; a string holding the holder's token)
-- ARGV[1] "" for a manual write (obeys neither); for an automatic write the writing instance's
--   lease token, or "*" when it writes without a lease (`once`, or leader election off)
-- gate() returns nil when the write may go ahead, else the code every job of the call gets:
--   -11 paused, -12 the writer does not hold the lease, -13 the switches key is not a hash,
--   -14 the lease key is not a string (both refuse automatic writes until fixed)
-- It only reads: it comes before every check and every write of the script.
local function gate()
  local writer = ARGV[1]
  if writer == '' then
    return nil
  end
  local t = redis.call('TYPE', KEYS[1]).ok
  if t == 'hash' then
    if redis.call('HGET', KEYS[1], 'paused') == '1' then
      return -11
    end
  elseif t ~= 'none' then
    return -13
  end
  if writer ~= '*' then
    t = redis.call('TYPE', KEYS[2]).ok
    if t ~= 'string' and t ~= 'none' then
      return -14
    end
    if redis.call('GET', KEYS[2]) ~= writer then
      return -12
    end
  end
  return nil
end


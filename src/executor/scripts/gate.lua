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
--   -14 the lease key is not a string (both refuse automatic writes until fixed),
--   {-15, COMMAND, key} the user may not run one of the gate's reads (see denied() below)
-- It only reads: it comes before every check and every write of the script.
--
-- denied(COMMAND, key, args...): Redis checks a command's ACL permission only when the command
-- runs, after the script's earlier writes, which stay (a script is never rolled back). So each
-- script asks, before its first write, whether the user may run every command it is about to
-- run, on the very keys (key patterns and selectors can differ by key), and writes nothing for
-- the whole call if one is denied. Returns nil when allowed, else the code {-15, COMMAND, key}
-- (forbidden_by_acl; the array names the command and key for the log). Redis before 7.0 has no
-- redis.acl_check_cmd: nothing can be checked there (the daemon warns at start) and this
-- always allows.
local acl_check_cmd = redis.acl_check_cmd
local function denied(command, key, ...)
  if acl_check_cmd and not acl_check_cmd(command, key, ...) then
    return {-15, command, key}
  end
  return nil
end

local function gate()
  local writer = ARGV[1]
  if writer == '' then
    return nil
  end
  local no = denied('TYPE', KEYS[1]) or denied('HGET', KEYS[1], 'paused')
  if no then
    return no
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
    no = denied('TYPE', KEYS[2]) or denied('GET', KEYS[2])
    if no then
      return no
    end
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


-- The gate: the shared prologue of every write script (the executor prepends it), so that the
-- switches every instance obeys are checked in the same atomic step as the write itself: a
-- pause answered by any instance stops every instance's next script call, and only the instance
-- holding the lease writes automatically, even one that has not yet noticed it lost the lease.
--
-- KEYS[1] rq-retryd's switches hash (<prefix>:retryd:switches; field `paused` = "1")
-- KEYS[2] the active-instance lease (<prefix>:retryd:lease; a string holding the holder's token)
-- KEYS[3] the audit trail (<prefix>:retryd:audit, a stream; see audit() below)
-- ARGV[1] "" for a manual write (obeys neither); for an automatic write the writing instance's
--   lease token, or "*" when it writes without a lease (`once`, or leader election off)
-- ARGV[2..6] the audit entry's who, why, action, at (RFC 3339, the caller's clock) and queue
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


-- The audit trail is part of the write: each script call appends one entry for the jobs it
-- changed, in the same atomic step, so no requeue or purge is ever unrecorded (a crash or a
-- refusal between a write and a separate XADD could leave one so). audit_refusal() runs with
-- the checks, before the first write: XADD on a key that is not a stream would fail after the
-- writes, and so would one the ACL denies. It returns nil, -16 (the audit key is not a
-- stream: nothing written for any job of the call) or the forbidden_by_acl code.
-- Entry fields, as `audit::recent` reads them: at, who, action, why, queue, count (exact),
-- job_ids (the first 100, comma-joined, for readers older than job_ids_json) and job_ids_json
-- (the same ids as a JSON array: an id may contain a comma). MAXLEN ~ 10000, as audit::append.
local AUDIT_MAX_IDS, AUDIT_MAXLEN = 100, 10000
local function audit_refusal()
  local no = denied('TYPE', KEYS[3])
    or denied('XADD', KEYS[3], 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'at', ARGV[5])
  if no then
    return no
  end
  local t = redis.call('TYPE', KEYS[3]).ok
  if t ~= 'stream' and t ~= 'none' then
    return -16
  end
  return nil
end

-- Appends the entry for `ids`, the jobs this call changed; nothing when it changed none.
-- `to_queue`, for a requeue, names the queue the jobs went to (their origin, or the policy's
-- requeue_to); nil leaves the field out.
local function audit(ids, to_queue)
  if #ids == 0 then
    return
  end
  local listed = {}
  for i = 1, math.min(#ids, AUDIT_MAX_IDS) do
    listed[i] = ids[i]
  end
  local entry = {'XADD', KEYS[3], 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'at', ARGV[5], 'who', ARGV[2],
    'action', ARGV[4], 'why', ARGV[3], 'queue', ARGV[6], 'count', #ids,
    'job_ids', table.concat(listed, ','), 'job_ids_json', cjson.encode(listed)}
  if to_queue then
    entry[#entry+1] = 'to_queue'
    entry[#entry+1] = to_queue
  end
  redis.call(unpack(entry))
end

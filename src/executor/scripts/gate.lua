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

-- Each switch is one read under pcall, which fails (WRONGTYPE) exactly where a TYPE check
-- would refuse, and reads nil from a missing key: one command where TYPE and a read were two
-- (issue 24, item 2: the gate runs once per script call).
local function wrong_type(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

local function gate()
  local writer = ARGV[1]
  if writer == '' then
    return nil
  end
  local no = denied('HGET', KEYS[1], 'paused')
  if no then
    return no
  end
  local paused = redis.pcall('HGET', KEYS[1], 'paused')
  if wrong_type(paused) then
    return -13
  elseif paused == '1' then
    return -11
  end
  if writer ~= '*' then
    no = denied('GET', KEYS[2])
    if no then
      return no
    end
    local holder = redis.pcall('GET', KEYS[2])
    if wrong_type(holder) then
      return -14
    elseif holder ~= writer then
      return -12
    end
  end
  return nil
end


-- The audit trail is part of the write: each script call appends one entry for the jobs it
-- changed, in the same atomic step, so no requeue or purge is ever unrecorded (a crash or a
-- refusal between a write and a separate XADD could leave one so). audit_refusal() runs with
-- the checks, before the first write: XADD on a key that is not a stream would fail after the
-- writes, and so would one the ACL denies (and, for an automatic write, the XREVRANGE and
-- XDEL of the fold below). It returns nil, -16 (the audit key is not a stream: nothing
-- written for any job of the call) or the forbidden_by_acl code.
-- Entry fields, as `audit::entry_of` reads them: at, who, action, why, queue, count (exact),
-- job_ids (the first 100, comma-joined, for readers older than job_ids_json) and job_ids_json
-- (every id of the entry as a JSON array: an id may contain a comma; a call lists all of its
-- jobs there, however many, so each is findable by job_id); a folded entry also last_at and
-- replaces (below). MAXLEN ~ 10000, as audit::append.
--
-- Automatic writes fold (issue 22: the supervisor wrote 598 entries in 13 minutes, and a
-- person's action scrolled out in 3): an automatic call whose entry would say the same who,
-- action, why, queue and to_queue as one of the newest AUDIT_FOLD_LOOKBACK entries, written
-- in the same minute (the first 16 characters of `at`: the caller's clock), adds its jobs to
-- that entry instead, as long as it then lists at most AUDIT_MAX_IDS ids (so every job an
-- automatic write changed stays listed in some entry). Stream entries cannot change, so the
-- fold deletes the old entry (XDEL) and appends the merged one, which keeps the first `at`,
-- says `last_at` and names the entry it `replaces` (readers that mirror the stream drop
-- that one). All in the same atomic step as the writes. Manual writes never fold: each of a
-- person's actions stays an entry of its own.
local AUDIT_MAX_IDS, AUDIT_MAXLEN = 100, 10000
local AUDIT_FOLD_LOOKBACK = 16
-- An automatic call's newest audit entry, as audit_refusal() read it ({} when the stream is
-- empty); fold_target() reads older ones, one at a time, only while they are of another kind.
-- Reading all AUDIT_FOLD_LOOKBACK at once copied up to 16 entries of 100 ids into Lua on every
-- call: 5.2 us of Redis CPU per job of a bulk requeue, about an eighth of the script's cost,
-- where the newest entry alone settles nearly every call (issue 24, item 1).
local audit_newest = {}
local function audit_refusal()
  local no = denied('TYPE', KEYS[3])
    or denied('XADD', KEYS[3], 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'at', ARGV[5])
  if not no and ARGV[1] ~= '' then
    no = denied('XREVRANGE', KEYS[3], '+', '-', 'COUNT', AUDIT_FOLD_LOOKBACK)
      or denied('XDEL', KEYS[3], '0-1')
  end
  if no then
    return no
  end
  if ARGV[1] ~= '' then
    -- An automatic call reads the newest entry for the fold now, before any write (it stays
    -- as read: nothing before audit() writes the stream); the read fails where TYPE would
    -- refuse, so it is the type check too.
    audit_newest = redis.pcall('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
    if wrong_type(audit_newest) then
      return -16
    end
    return nil
  end
  local t = redis.call('TYPE', KEYS[3]).ok
  if t ~= 'stream' and t ~= 'none' then
    return -16
  end
  return nil
end

-- The newest entry this automatic call may fold into (see above), as {id, fields by name,
-- its ids}; nil when there is none. Only the newest entry of the same kind (who, action, why,
-- queue, to_queue, minute) among the newest AUDIT_FOLD_LOOKBACK is a candidate: when it has no
-- room, the call starts an entry of its own. Reads only (the entries before the newest one at
-- a time, newest first, and only while they are of another kind), and nothing in it can fail:
-- the key is a stream (audit_refusal), the user may run XREVRANGE on it (asked there), and a
-- field that is not what this script writes (a count that is no number, ids that are no JSON
-- array) makes the entry one not to fold into.
local function fold_target(n_ids, to_queue)
  if ARGV[1] == '' then
    return nil
  end
  local minute = string.sub(ARGV[5], 1, 16)
  local entry = audit_newest[1]
  for looked = 1, AUDIT_FOLD_LOOKBACK do
    if not entry then
      return nil
    end
    local f = {}
    for i = 1, #entry[2], 2 do
      f[entry[2][i]] = entry[2][i+1]
    end
    if f.who == ARGV[2] and f.action == ARGV[4] and f.why == ARGV[3] and f.queue == ARGV[6]
      and f.to_queue == to_queue and type(f.at) == 'string'
      and string.sub(f.at, 1, 16) == minute then
      local ok, decoded = pcall(cjson.decode, f.job_ids_json or '')
      local count = tonumber(f.count)
      if not ok or type(decoded) ~= 'table' or not count or count < 1
        or count + n_ids > AUDIT_MAX_IDS then
        return nil
      end
      local ids = {}
      for i = 1, count do
        if type(decoded[i]) ~= 'string' then
          return nil
        end
        ids[i] = decoded[i]
      end
      return {entry[1], f, ids}
    end
    if looked < AUDIT_FOLD_LOOKBACK then
      entry = redis.call('XREVRANGE', KEYS[3], '(' .. entry[1], '-', 'COUNT', 1)[1]
    end
  end
  return nil
end

-- Appends the entry for `ids`, the jobs this call changed; nothing when it changed none.
-- `to_queue`, for a requeue, names the queue the jobs went to (their origin, or the policy's
-- requeue_to); nil leaves the field out. An automatic call may fold into an entry before it.
local function audit(ids, to_queue)
  if #ids == 0 then
    return
  end
  local at, listed, folded = ARGV[5], {}, fold_target(#ids, to_queue)
  if folded then
    redis.call('XDEL', KEYS[3], folded[1])
    at, listed = folded[2].at, folded[3]
  end
  -- [gaps] Every id of the call is listed in job_ids_json (a fold never passes AUDIT_MAX_IDS;
  -- only one call's own ids, bounded by the executor's SCRIPT_BATCH, can); job_ids keeps the
  -- first AUDIT_MAX_IDS for older readers.
  for i = 1, #ids do
    listed[#listed+1] = ids[i]
  end
  local entry = {'XADD', KEYS[3], 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'at', at, 'who', ARGV[2],
    'action', ARGV[4], 'why', ARGV[3], 'queue', ARGV[6], 'count', #listed,
    'job_ids', table.concat(listed, ',', 1, math.min(#listed, AUDIT_MAX_IDS)),
    'job_ids_json', cjson.encode(listed)}
  if to_queue then
    entry[#entry+1] = 'to_queue'
    entry[#entry+1] = to_queue
  end
  if folded then
    entry[#entry+1] = 'last_at'
    entry[#entry+1] = ARGV[5]
    entry[#entry+1] = 'replaces'
    entry[#entry+1] = folded[1]
  end
  redis.call(unpack(entry))
end

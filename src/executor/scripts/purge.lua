-- Delete failed jobs atomically, each only if it is still the failure the caller decided on.
-- Like RQ's Job.delete: the registry entry, the job hash, its dependency sets and its results.
-- UNLINK frees large values (multi-MB tracebacks) off the main thread.
-- One call handles a batch of jobs (at most SCRIPT_BATCH, 50) of one queue, and appends one
-- audit entry for the jobs it purged.
--
-- Redis does not roll back a script whose later command fails, so each job is checked whole
-- before its first write, with commands that cannot fail themselves (TYPE, HMGET under
-- pcall): the type of its failed registry (ZSCORE and ZREM need a sorted set), of its job hash,
-- and of the keys that go with it (a dependents or dependencies key that is not a set, or a
-- results key that is not a stream, is not RQ's: it is not deleted, and neither is the job).
-- After the checks nothing can fail on data (ZREM on a sorted set, UNLINK), so a job is
-- purged whole or not at all, and a refused job never stops the others.
--
-- Nor can an ACL refuse a command halfway: the script runs in two passes. The first only reads
-- and decides, asking before each read and for each job it will purge whether the user may run
-- that command on those keys (denied(), gate.lua): TYPE and XADD on the audit stream, TYPE and ZSCORE on each registry (once per
-- registry), HMGET on each job hash (once its pcall failed), TYPE on its three other keys, then ZREM on the registry and
-- UNLINK on the four keys of each job to purge. Any denial returns forbidden_by_acl for every
-- job of the call before the first write; the second pass writes.
--
-- KEYS[1..3], ARGV[1..6]: the gate and the audit entry (gate.lua, prepended); the executor
--   sends one queue's jobs per call (the entry names one queue)
-- For job i (0-based), KEYS[5i+4..5i+8]:
--   failed registry (zset), job hash, dependents set, dependencies set, results stream
-- For job i, ARGV[7+4i .. 10+4i]: job id, expected origin, expected ended_at, expected retryd_attempts
-- Returns one code per job:
--    1 purged
--    0 not in the failed registry
--   -1 job hash missing (left alone: only a decision on a readable job deletes)
--   -2 the job changed since the decision
--   -3 the job key is not a hash (left untouched)
--   -6 the failed registry is not a sorted set (left untouched)
--   -8 the dependents key is not a set (left untouched)
--   -9 the dependencies key is not a set (left untouched)
--  -10 the results key is not a stream (left untouched)
--  -16 the audit key is not a stream (nothing written for any job of the call)
--   -11..-14 the gate refused the call (see gate.lua; nothing written for any job)
--   {-15, COMMAND, key} forbidden_by_acl: the user may not run COMMAND on key (an array in
--     place of the code; nothing written for any job of the call)
local codes = {}
local n = (#KEYS - 3) / 5
local function refuse_all(code)
  for i = 1, n do
    codes[i] = code
  end
  return codes
end
local refused = gate() or audit_refusal()
if refused then
  return refuse_all(refused)
end
local function is(key, want)
  local t = redis.call('TYPE', key).ok
  return t == want or t == 'none'
end

-- Pass 1, reads only: each job's code, and what to delete. Returns the job's code, or the
-- forbidden_by_acl code (a table) to refuse the whole call with.
local registry_ok, plan, seen = {}, {}, {}
local function decide(i)
  local k = 3 + 5*i
  local failed, job = KEYS[k+1], KEYS[k+2]
  local a = 7 + 4*i
  local id = ARGV[a]
  local no
  if registry_ok[failed] == nil then
    no = denied('TYPE', failed) or denied('ZSCORE', failed, id) or denied('ZREM', failed, id)
    if no then
      return no
    end
    registry_ok[failed] = is(failed, 'zset')
  end
  if not registry_ok[failed] then
    return -6
  end
  local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'status')
  if cur.err then
    -- Not a hash, or (asked only now, off the hot path) an HMGET the user may not run.
    return denied('HMGET', job, 'origin') or -3
  end
  if seen[id] or not redis.call('ZSCORE', failed, id) then
    return 0
  end
  if not cur[2] and not cur[4] then
    return -1
  end
  if (cur[1] or '') ~= ARGV[a+1] or (cur[2] or '') ~= ARGV[a+2] or (cur[3] or '') ~= ARGV[a+3] then
    return -2
  end
  if (cur[2] or '') == '' and cur[4] ~= 'failed' then
    -- No ended_at (RQ failed it after its worker died): only while it is still a failure.
    return -2
  end
  no = denied('TYPE', KEYS[k+3]) or denied('TYPE', KEYS[k+4]) or denied('TYPE', KEYS[k+5])
  if no then
    return no
  end
  if not is(KEYS[k+3], 'set') then
    return -8
  end
  if not is(KEYS[k+4], 'set') then
    return -9
  end
  if not is(KEYS[k+5], 'stream') then
    return -10
  end
  if denied('UNLINK', job, KEYS[k+3], KEYS[k+4], KEYS[k+5]) then
    -- Name the one key of the four the user may not unlink.
    for j = 2, 5 do
      no = denied('UNLINK', KEYS[k+j])
      if no then
        return no
      end
    end
    return {-15, 'UNLINK', job}
  end
  plan[#plan+1] = {failed, id, job, KEYS[k+3], KEYS[k+4], KEYS[k+5]}
  return 1
end
for i = 0, n - 1 do
  local code = decide(i)
  if type(code) == 'table' then
    return refuse_all(code)
  end
  if code == 1 then
    -- Twice in one call: the second finds it purged, as it would have found it gone.
    seen[ARGV[7 + 4*i]] = true
  end
  codes[i+1] = code
end

-- Pass 2, writes only: nothing here can fail on data or on the ACL.
local purged = {}
for _, p in ipairs(plan) do
  redis.call('ZREM', p[1], p[2])
  redis.call('UNLINK', p[3], p[4], p[5], p[6])
  purged[#purged+1] = p[2]
end
audit(purged)
return codes

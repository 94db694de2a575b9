-- Delete failed jobs atomically, each only if it is still the failure the caller decided on.
-- What RQ 2.x's Job.delete(remove_from_queue=True, delete_dependents=False) removes for a
-- failed job: its failed-registry entry, its execution records (the ExecutionRegistry
-- rq:executions:<id>, each execution hash rq:execution:<id>:<execution id> it lists, and those
-- executions' entries in the StartedJobRegistry rq:wip:<origin>), its membership in its group
-- (SREM from rq:group:<group_id>, when the hash names one), the job hash and its dependency
-- sets; and, beyond RQ (which leaves it to expire with failure_ttl), its results stream.
-- Not done, unlike RQ: LREM of the id from rq:queue:<origin> (a failed job the compare still
-- matches is in no queue, and LREM costs a scan of the whole list per job); RQ also leaves
-- the group in rq:groups (its own clean_registries drops empty groups), and so does this.
-- RQ 1.x has no executions nor groups: there those keys do not exist and nothing changes.
-- UNLINK frees large values (multi-MB tracebacks) off the main thread.
-- One call handles a batch of jobs (at most SCRIPT_BATCH, 50) of one queue, and appends one
-- audit entry for the jobs it purged.
--
-- Redis does not roll back a script whose later command fails, so each job is checked whole
-- before its first write, with commands that cannot fail themselves (TYPE, HMGET and ZRANGE
-- under pcall): the type of its failed registry (ZSCORE and ZREM need a sorted set), of its
-- job hash, and of the keys that go with it (a dependents, dependencies or group key that is
-- not a set, a results key that is not a stream, an executions or started registry that is
-- not a sorted set, an execution record that is not a hash: not RQ's, so not deleted, and
-- neither is the job). After the checks nothing can fail on data (ZREM on a sorted set, SREM
-- on a set, UNLINK), so a job is purged whole or not at all, and a refused job never stops
-- the others.
--
-- Nor can an ACL refuse a command halfway: the script runs in two passes. The first only reads
-- and decides, asking before each read and for each job it will purge whether the user may run
-- that command on those keys (denied(), gate.lua): TYPE and XADD on the audit stream, TYPE and
-- ZSCORE on each registry (once per registry), HMGET on each job hash (once its pcall failed),
-- EXISTS on its two dependency sets and TYPE on those that exist, TYPE on its results stream,
-- ZRANGE on its executions registry (under pcall: its type check too), then ZREM on the
-- failed registry (and on the started registry when an execution is listed), SREM on the
-- group, and UNLINK on the keys of each job to purge. Any denial returns forbidden_by_acl for every job of the call
-- before the first write; the second pass writes.
--
-- KEYS[1..3], ARGV[1..6]: the gate and the audit entry (gate.lua, prepended); the executor
--   sends one queue's jobs per call (the entry names one queue)
-- ARGV[7] what a group's key starts with (rq:group:), ARGV[8] what an execution record's key
--   starts with (rq:execution:; the record of execution E of job J is <ARGV[8]>J:E)
-- For job i (0-based), KEYS[7i+4..7i+10]: failed registry (zset), job hash, dependents set,
--   dependencies set, results stream, executions registry (zset), started registry of its
--   origin (zset, rq:wip:<origin>)
-- For job i, ARGV[9+4i .. 12+4i]: job id, expected origin, expected ended_at, expected
--   retryd_attempts
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
--   {-17, key} key (the executions or started registry, an execution record or the group)
--     is not of the type RQ gives it (an array in place of the code; the job left untouched)
local codes = {}
local n = (#KEYS - 3) / 7
local group_prefix, execution_prefix = ARGV[7], ARGV[8]
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

-- Pass 1, reads only: each job's code, and what to delete. Returns the job's code, the
-- wrong-type code naming a key ({-17, key}), or the forbidden_by_acl code (a table with -15)
-- to refuse the whole call with.
local registry_ok, plan, seen = {}, {}, {}
local function decide(i)
  local k = 3 + 7*i
  local failed, job = KEYS[k+1], KEYS[k+2]
  local executions, started = KEYS[k+6], KEYS[k+7]
  local a = 9 + 4*i
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
  local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'status',
    'group_id')
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
  if (cur[2] or '') == '' and cur[4] ~= 'failed' and cur[4] ~= 'stopped' then
    -- No ended_at (RQ failed it after its worker died, or an operator stopped it): only while
    -- it is still that failure.
    return -2
  end
  -- Most jobs have no dependency sets: one EXISTS for both, and TYPE only for those there.
  no = denied('EXISTS', KEYS[k+3], KEYS[k+4]) or denied('TYPE', KEYS[k+5])
    or denied('ZRANGE', executions, '0', '-1')
  if no then
    return no
  end
  if redis.call('EXISTS', KEYS[k+3], KEYS[k+4]) > 0 then
    no = denied('TYPE', KEYS[k+3]) or denied('TYPE', KEYS[k+4])
    if no then
      return no
    end
    if not is(KEYS[k+3], 'set') then
      return -8
    end
    if not is(KEYS[k+4], 'set') then
      return -9
    end
  end
  if not is(KEYS[k+5], 'stream') then
    return -10
  end
  -- Its execution records: the ones its ExecutionRegistry lists (a worker that died left
  -- them), and their entries in the started registry. The ZRANGE under pcall fails
  -- (WRONGTYPE) exactly where a TYPE check would refuse, so it is the check too.
  local unlink = {job, KEYS[k+3], KEYS[k+4], KEYS[k+5], executions}
  local runs = {}
  local listed = redis.pcall('ZRANGE', executions, 0, -1)
  if listed.err then
    return {-17, executions}
  end
  for _, eid in ipairs(listed) do
    local record = execution_prefix .. id .. ':' .. eid
    no = denied('TYPE', record)
    if no then
      return no
    end
    if not is(record, 'hash') then
      return {-17, record}
    end
    unlink[#unlink+1] = record
    runs[#runs+1] = id .. ':' .. eid
  end
  if #runs > 0 then
    no = denied('TYPE', started) or denied('ZREM', started, runs[1])
    if no then
      return no
    end
    if not is(started, 'zset') then
      return {-17, started}
    end
  end
  -- Its group, as RQ's Group.delete_job: SREM from the set the hash's group_id names.
  local group
  if (cur[5] or '') ~= '' then
    group = group_prefix .. cur[5]
    no = denied('TYPE', group) or denied('SREM', group, id)
    if no then
      return no
    end
    if not is(group, 'set') then
      return {-17, group}
    end
  end
  if denied('UNLINK', unpack(unlink)) then
    -- Name the one key the user may not unlink.
    for _, key in ipairs(unlink) do
      no = denied('UNLINK', key)
      if no then
        return no
      end
    end
    return {-15, 'UNLINK', job}
  end
  plan[#plan+1] = {failed = failed, id = id, unlink = unlink, started = started, runs = runs,
    group = group}
  return 1
end
for i = 0, n - 1 do
  local code = decide(i)
  if type(code) == 'table' and code[1] == -15 then
    return refuse_all(code)
  end
  if code == 1 then
    -- Twice in one call: the second finds it purged, as it would have found it gone.
    seen[ARGV[9 + 4*i]] = true
  end
  codes[i+1] = code
end

-- Pass 2, writes only: nothing here can fail on data or on the ACL.
local purged = {}
for _, p in ipairs(plan) do
  redis.call('ZREM', p.failed, p.id)
  if #p.runs > 0 then
    redis.call('ZREM', p.started, unpack(p.runs))
  end
  if p.group then
    redis.call('SREM', p.group, p.id)
  end
  redis.call('UNLINK', unpack(p.unlink))
  purged[#purged+1] = p.id
end
audit(purged)
return codes

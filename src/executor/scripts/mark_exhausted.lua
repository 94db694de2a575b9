-- Mark failed jobs whose max_attempts is used up, once, each only if it is still the failure the
-- caller decided on. One call handles a batch of jobs (at most SCRIPT_BATCH, 50) of one queue,
-- and appends one audit entry for the jobs it marked.
--
-- Redis does not roll back a script whose later command fails, so each job is checked before
-- its write with commands that cannot fail themselves: TYPE of its failed registry (ZSCORE
-- needs a sorted set) and HMGET under pcall (the job key must be a hash). After that the one
-- HSET cannot fail on data, and a refused job never stops the others.
--
-- Nor can an ACL refuse the HSET halfway through a call: a first pass only reads and decides,
-- asking before each read and for each job it will mark whether the user may run that command
-- on that key (denied(), gate.lua): TYPE and XADD on the audit stream, TYPE and ZSCORE on each registry (once per registry), HMGET
-- (once its pcall failed) and HSET on each job hash. Any denial returns forbidden_by_acl for every job of the call
-- before the first write; the second pass writes.
--
-- KEYS[1..3], ARGV[1..6]: the gate and the audit entry (gate.lua, prepended); the executor
--   sends one queue's jobs per call (the entry names one queue)
-- For job i (0-based), KEYS[2i+4..2i+5]: failed registry (zset), job hash
-- For job i, ARGV[7+5i .. 11+5i]: job id, expected origin, expected ended_at, expected
--   retryd_attempts, policy name (stored in retryd_policy)
-- Returns one code per job:
--    1 marked now
--    2 already marked (no write)
--    0 not in the failed registry
--   -1 job hash missing
--   -2 the job changed since the decision
--   -3 the job key is not a hash (left untouched)
--   -6 the failed registry is not a sorted set (left untouched)
--  -16 the audit key is not a stream (nothing written for any job of the call)
--   -11..-14 the gate refused the call (see gate.lua; nothing written for any job)
--   {-15, COMMAND, key} forbidden_by_acl: the user may not run COMMAND on key (an array in
--     place of the code; nothing written for any job of the call)
local codes = {}
local n = (#KEYS - 3) / 2
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

-- Pass 1, reads only: each job's code, and which to mark. Returns the job's code, or the
-- forbidden_by_acl code (a table) to refuse the whole call with.
local registry_ok, plan, marked = {}, {}, {}
local function decide(i)
  local failed, job = KEYS[2*i+4], KEYS[2*i+5]
  local a = 7 + 5*i
  local id = ARGV[a]
  local no
  if registry_ok[failed] == nil then
    no = denied('TYPE', failed) or denied('ZSCORE', failed, id)
    if no then
      return no
    end
    local t = redis.call('TYPE', failed).ok
    registry_ok[failed] = t == 'zset' or t == 'none'
  end
  if not registry_ok[failed] then
    return -6
  end
  local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'retryd_exhausted', 'status')
  if cur.err then
    -- Not a hash, or (asked only now, off the hot path) an HMGET the user may not run.
    return denied('HMGET', job, 'origin') or -3
  end
  if not redis.call('ZSCORE', failed, id) then
    return 0
  end
  if not cur[2] and not cur[5] then
    return -1
  end
  if (cur[1] or '') ~= ARGV[a+1] or (cur[2] or '') ~= ARGV[a+2] or (cur[3] or '') ~= ARGV[a+3] then
    return -2
  end
  if (cur[2] or '') == '' and cur[5] ~= 'failed' then
    -- No ended_at (RQ failed it after its worker died): only while it is still a failure.
    return -2
  end
  if cur[4] == '1' or marked[job] then
    return 2
  end
  no = denied('HSET', job, 'retryd_exhausted', '1')
  if no then
    return no
  end
  marked[job] = true
  plan[#plan+1] = {job, ARGV[a+4], id}
  return 1
end
for i = 0, n - 1 do
  local code = decide(i)
  if type(code) == 'table' then
    return refuse_all(code)
  end
  codes[i+1] = code
end

-- Pass 2, writes only: nothing here can fail on data or on the ACL.
local marked_ids = {}
for _, p in ipairs(plan) do
  redis.call('HSET', p[1], 'retryd_exhausted', '1', 'retryd_policy', p[2])
  marked_ids[#marked_ids+1] = p[3]
end
audit(marked_ids)
return codes

-- Delete failed jobs atomically, each only if it is still the failure the caller decided on.
-- Like RQ's Job.delete: the registry entry, the job hash, its dependency sets and its results.
-- UNLINK frees large values (multi-MB tracebacks) off the main thread.
-- One call handles a batch of jobs (at most SCRIPT_BATCH, 50), possibly of several registries.
--
-- Redis does not roll back a script whose later command fails, so each job is checked whole
-- before its first write, with commands that cannot fail themselves (TYPE, HMGET under
-- pcall): the type of its failed registry (ZSCORE and ZREM need a sorted set), of its job hash,
-- and of the keys that go with it (a dependents or dependencies key that is not a set, or a
-- results key that is not a stream, is not RQ's: it is not deleted, and neither is the job).
-- After the checks nothing can fail on data (ZREM on a sorted set, UNLINK), so a job is
-- purged whole or not at all, and a refused job never stops the others.
--
-- KEYS[1], KEYS[2], ARGV[1]: the gate (gate.lua, prepended)
-- For job i (0-based), KEYS[5i+3..5i+7]:
--   failed registry (zset), job hash, dependents set, dependencies set, results stream
-- For job i, ARGV[2+4i .. 5+4i]: job id, expected origin, expected ended_at, expected retryd_attempts
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
--   -11..-14 the gate refused the call (see gate.lua; nothing written for any job)
local codes = {}
local n = (#KEYS - 2) / 5
local refused = gate()
if refused then
  for i = 1, n do
    codes[i] = refused
  end
  return codes
end
local registry_ok = {}
local function is(key, want)
  local t = redis.call('TYPE', key).ok
  return t == want or t == 'none'
end
for i = 0, n - 1 do
  local k = 2 + 5*i
  local failed, job = KEYS[k+1], KEYS[k+2]
  local a = 2 + 4*i
  local id = ARGV[a]
  if registry_ok[failed] == nil then
    registry_ok[failed] = is(failed, 'zset')
  end
  local code
  if not registry_ok[failed] then
    code = -6
  else
    local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'status')
    if cur.err then
      code = -3
    elseif not redis.call('ZSCORE', failed, id) then
      code = 0
    elseif not cur[2] and not cur[4] then
      code = -1
    elseif (cur[1] or '') ~= ARGV[a+1] or (cur[2] or '') ~= ARGV[a+2] or (cur[3] or '') ~= ARGV[a+3] then
      code = -2
    elseif (cur[2] or '') == '' and cur[4] ~= 'failed' then
      -- No ended_at (RQ failed it after its worker died): only while it is still a failure.
      code = -2
    elseif not is(KEYS[k+3], 'set') then
      code = -8
    elseif not is(KEYS[k+4], 'set') then
      code = -9
    elseif not is(KEYS[k+5], 'stream') then
      code = -10
    else
      redis.call('ZREM', failed, id)
      redis.call('UNLINK', job, KEYS[k+3], KEYS[k+4], KEYS[k+5])
      code = 1
    end
  end
  codes[i+1] = code
end
return codes

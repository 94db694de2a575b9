-- Delete failed jobs atomically, each only if it is still the failure the caller decided on.
-- Like RQ's Job.delete: the registry entry, the job hash, its dependency sets and its results.
-- UNLINK frees large values (multi-MB tracebacks) off the main thread.
-- One call handles a batch of jobs (at most SCRIPT_BATCH, 50).
--
-- For job i (0-based), KEYS[5i+1..5i+5]:
--   failed registry (zset), job hash, dependents set, dependencies set, results stream
-- For job i, ARGV[1+4i .. 4+4i]: job id, expected origin, expected ended_at, expected retryd_attempts
-- Returns one code per job:
--    1 purged
--    0 not in the failed registry
--   -1 job hash missing (left alone: only a decision on a readable job deletes)
--   -2 the job changed since the decision
--   -3 the job key is not a hash (left untouched)
local codes = {}
local n = #KEYS / 5
for i = 0, n - 1 do
  local failed, job = KEYS[5*i+1], KEYS[5*i+2]
  local a = 1 + 4*i
  local id = ARGV[a]
  local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'status')
  local code
  if cur.err then
    code = -3
  elseif not redis.call('ZSCORE', failed, id) then
    code = 0
  elseif not cur[2] and not cur[4] then
    code = -1
  elseif (cur[1] or '') ~= ARGV[a+1] or (cur[2] or '') ~= ARGV[a+2] or (cur[3] or '') ~= ARGV[a+3] then
    code = -2
  else
    redis.call('ZREM', failed, id)
    redis.call('UNLINK', job, KEYS[5*i+3], KEYS[5*i+4], KEYS[5*i+5])
    code = 1
  end
  codes[i+1] = code
end
return codes

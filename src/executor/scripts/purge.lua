-- Delete one failed job atomically, only if it is still the failure the caller decided on.
-- Like RQ's Job.delete: the registry entry, the job hash, its dependency sets and its results.
-- UNLINK frees large values (multi-MB tracebacks) off the main thread.
--
-- KEYS[1] failed registry (zset)   KEYS[2] job hash
-- KEYS[3] dependents set           KEYS[4] dependencies set      KEYS[5] results stream
-- ARGV[1] job id
-- ARGV[2] expected origin  ARGV[3] expected ended_at  ARGV[4] expected retryd_attempts
-- Returns:  1 purged
--           0 not in the failed registry
--          -1 job hash missing (left alone: only a decision on a readable job deletes)
--          -2 the job changed since the decision
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local cur = redis.call('HMGET', KEYS[2], 'origin', 'ended_at', 'retryd_attempts')
if (cur[1] or '') ~= ARGV[2] or (cur[2] or '') ~= ARGV[3] or (cur[3] or '') ~= ARGV[4] then
  return -2
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return 1

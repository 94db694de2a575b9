-- Mark a failed job whose max_attempts is used up, once, if it is still the failure decided on.
--
-- KEYS[1] failed registry (zset)   KEYS[2] job hash
-- ARGV[1] job id
-- ARGV[2] expected origin  ARGV[3] expected ended_at  ARGV[4] expected retryd_attempts
-- ARGV[5] policy name (stored in retryd_policy)
-- Returns:  1 marked now
--           2 already marked (no write)
--           0 not in the failed registry
--          -1 job hash missing
--          -2 the job changed since the decision
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local cur = redis.call('HMGET', KEYS[2], 'origin', 'ended_at', 'retryd_attempts', 'retryd_exhausted')
if (cur[1] or '') ~= ARGV[2] or (cur[2] or '') ~= ARGV[3] or (cur[3] or '') ~= ARGV[4] then
  return -2
end
if cur[4] == '1' then return 2 end
redis.call('HSET', KEYS[2], 'retryd_exhausted', '1', 'retryd_policy', ARGV[5])
return 1

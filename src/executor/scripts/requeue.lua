-- Requeue one failed job atomically, only if it is still the failure the caller decided on.
-- This is RQ's FailedJobRegistry.requeue in one step: RQ does ZREM and the enqueue in two round
-- trips, so a crash between them loses the job; here both happen or neither does.
--
-- KEYS[1] failed registry (zset)      KEYS[2] job hash
-- KEYS[3] queue list                  KEYS[4] set of known queues (rq:queues)
-- ARGV[1] job id
-- ARGV[2] expected origin             ("" when the field is missing)
-- ARGV[3] expected ended_at           (the failure the decision saw)
-- ARGV[4] expected retryd_attempts    ("" when unset)
-- ARGV[5] new retryd_attempts         ("" for a manual retry: the count is left as it is)
-- ARGV[6] policy name or trigger      (stored in retryd_policy)
-- ARGV[7] now in RQ's timestamp format (enqueued_at, retryd_requeued_at)
-- ARGV[8] "1" to push at the front (LPUSH), else RPUSH
-- ARGV[9] queue key to add to rq:queues
-- Returns:  1 requeued
--           0 not in the failed registry (someone else moved it)
--          -1 job hash missing (registry entry without a job)
--          -2 the job changed since the decision (origin, ended_at or attempts differ)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local cur = redis.call('HMGET', KEYS[2], 'origin', 'ended_at', 'retryd_attempts', 'ttl')
if (cur[1] or '') ~= ARGV[2] or (cur[2] or '') ~= ARGV[3] or (cur[3] or '') ~= ARGV[4] then
  return -2
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2],
  'status', 'queued', 'enqueued_at', ARGV[7], 'started_at', '', 'ended_at', '',
  'retryd_policy', ARGV[6], 'retryd_requeued_at', ARGV[7])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'retryd_attempts', ARGV[5]) end
redis.call('HDEL', KEYS[2], 'exc_info', 'retryd_exhausted')
-- Like RQ's enqueue: a job with its own ttl expires after it; otherwise it must not expire
-- while it waits in the queue (the failure_ttl EXPIRE from the failure would still be there).
local ttl = tonumber(cur[4] or '')
if ttl and ttl > 0 then
  redis.call('EXPIRE', KEYS[2], math.floor(ttl))
else
  redis.call('PERSIST', KEYS[2])
end
if ARGV[8] == '1' then
  redis.call('LPUSH', KEYS[3], ARGV[1])
else
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
redis.call('SADD', KEYS[4], ARGV[9])
return 1

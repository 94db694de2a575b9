-- Requeue failed jobs atomically, each only if it is still the failure the caller decided on.
-- This is RQ's FailedJobRegistry.requeue in one step per job: RQ does the ZREM and the enqueue
-- in two round trips, so a crash between them loses the job; here both happen or neither does.
-- One call handles a batch of jobs (at most 100, well under a millisecond of Redis time).
--
-- For job i (0-based), KEYS[4i+1..4i+4]:
--   failed registry (zset), job hash, queue list, set of known queues (rq:queues)
-- ARGV[1] now in RQ's timestamp format (enqueued_at, retryd_requeued_at)
-- For job i, ARGV[2+8i .. 9+8i]:
--   job id, expected origin ("" when missing), expected ended_at, expected retryd_attempts
--   ("" when unset), new retryd_attempts ("" for a manual retry: left as it is), policy name
--   (stored in retryd_policy), "1" to push at the front (LPUSH) else RPUSH, queue key for rq:queues
-- Returns one code per job:
--    1 requeued
--    0 not in the failed registry (someone else moved it)
--   -1 job hash missing (registry entry without a job)
--   -2 the job changed since the decision (origin, ended_at or attempts differ)
--   -3 the job key is not a hash (left untouched)
local now = ARGV[1]
local codes = {}
local known = {}
local n = #KEYS / 4
for i = 0, n - 1 do
  local failed, job, queue, queues = KEYS[4*i+1], KEYS[4*i+2], KEYS[4*i+3], KEYS[4*i+4]
  local a = 2 + 8*i
  local id = ARGV[a]
  local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'ttl', 'status')
  local code
  if cur.err then
    code = -3
  elseif (cur[1] or '') ~= ARGV[a+1] or (cur[2] or '') ~= ARGV[a+2] or (cur[3] or '') ~= ARGV[a+3] then
    if not redis.call('ZSCORE', failed, id) then
      code = 0
    elseif not cur[2] and not cur[5] then
      code = -1
    else
      code = -2
    end
  elseif not cur[2] and not cur[5] then
    code = redis.call('ZSCORE', failed, id) and -1 or 0
  elseif redis.call('ZREM', failed, id) == 0 then
    code = 0
  else
    if ARGV[a+4] ~= '' then
      redis.call('HSET', job, 'status', 'queued', 'enqueued_at', now, 'started_at', '', 'ended_at', '',
        'retryd_policy', ARGV[a+5], 'retryd_requeued_at', now, 'retryd_attempts', ARGV[a+4])
    else
      redis.call('HSET', job, 'status', 'queued', 'enqueued_at', now, 'started_at', '', 'ended_at', '',
        'retryd_policy', ARGV[a+5], 'retryd_requeued_at', now)
    end
    redis.call('HDEL', job, 'exc_info', 'retryd_exhausted')
    -- Like RQ's enqueue: a job with its own ttl expires after it; otherwise it must not expire
    -- while it waits in the queue (the failure_ttl EXPIRE from the failure would still be there).
    local ttl = tonumber(cur[4] or '')
    if ttl and ttl > 0 then
      redis.call('EXPIRE', job, math.floor(ttl))
    else
      redis.call('PERSIST', job)
    end
    if ARGV[a+6] == '1' then
      redis.call('LPUSH', queue, id)
    else
      redis.call('RPUSH', queue, id)
    end
    if not known[ARGV[a+7]] then
      redis.call('SADD', queues, ARGV[a+7])
      known[ARGV[a+7]] = true
    end
    code = 1
  end
  codes[i+1] = code
end
return codes

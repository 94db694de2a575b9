-- Asks a running bulk task to stop (DELETE /api/v1/tasks/{id}). The task's owner, on whichever
-- instance it runs, sees the request at its next beat and stops between two batches; what it
-- has not written yet stays as it was. Everything is checked before the one write.
--
-- KEYS[1]  the task's hash (<prefix>:retryd:task:<id>)
-- KEYS[2]  its owner's beat (<prefix>:retryd:task:<id>:alive)
-- ARGV[1]  who asks (token name and address)
-- ARGV[2]  when (RFC 3339)
--
-- Returns {code, state}:
--   0  no such task (never was, or expired)
--   1  asked: the task runs and its owner beats; the first request's who and when are kept
--   2  finished already; state says how (done, failed, cancelled)
--   3  interrupted: the hash says running but the owner's beat is gone (its instance stopped)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return {0, ''}
end
if state ~= 'running' then
  return {2, state}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {3, 'interrupted'}
end
if not redis.call('HGET', KEYS[1], 'cancel_requested_by') then
  redis.call('HSET', KEYS[1], 'cancel_requested_by', ARGV[1], 'cancel_requested_at', ARGV[2])
end
return {1, state}

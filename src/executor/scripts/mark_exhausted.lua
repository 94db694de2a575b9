-- Mark failed jobs whose max_attempts is used up, once, each only if it is still the failure the
-- caller decided on. One call handles a batch of jobs (at most SCRIPT_BATCH, 50).
--
-- For job i (0-based), KEYS[2i+1..2i+2]: failed registry (zset), job hash
-- For job i, ARGV[1+5i .. 5+5i]: job id, expected origin, expected ended_at, expected
--   retryd_attempts, policy name (stored in retryd_policy)
-- Returns one code per job:
--    1 marked now
--    2 already marked (no write)
--    0 not in the failed registry
--   -1 job hash missing
--   -2 the job changed since the decision
--   -3 the job key is not a hash (left untouched)
local codes = {}
local n = #KEYS / 2
for i = 0, n - 1 do
  local failed, job = KEYS[2*i+1], KEYS[2*i+2]
  local a = 1 + 5*i
  local id = ARGV[a]
  local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'retryd_exhausted', 'status')
  local code
  if cur.err then
    code = -3
  elseif not redis.call('ZSCORE', failed, id) then
    code = 0
  elseif not cur[2] and not cur[5] then
    code = -1
  elseif (cur[1] or '') ~= ARGV[a+1] or (cur[2] or '') ~= ARGV[a+2] or (cur[3] or '') ~= ARGV[a+3] then
    code = -2
  elseif cur[4] == '1' then
    code = 2
  else
    redis.call('HSET', job, 'retryd_exhausted', '1', 'retryd_policy', ARGV[a+4])
    code = 1
  end
  codes[i+1] = code
end
return codes

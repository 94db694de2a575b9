-- Mark failed jobs whose max_attempts is used up, once, each only if it is still the failure the
-- caller decided on. One call handles a batch of jobs (at most SCRIPT_BATCH, 50), possibly of
-- several registries.
--
-- Redis does not roll back a script whose later command fails, so each job is checked before
-- its write with commands that cannot fail themselves: TYPE of its failed registry (ZSCORE
-- needs a sorted set) and HMGET under pcall (the job key must be a hash). After that the one
-- HSET cannot fail on data, and a refused job never stops the others.
--
-- KEYS[1], KEYS[2], ARGV[1]: the gate (gate.lua, prepended)
-- For job i (0-based), KEYS[2i+3..2i+4]: failed registry (zset), job hash
-- For job i, ARGV[2+5i .. 6+5i]: job id, expected origin, expected ended_at, expected
--   retryd_attempts, policy name (stored in retryd_policy)
-- Returns one code per job:
--    1 marked now
--    2 already marked (no write)
--    0 not in the failed registry
--   -1 job hash missing
--   -2 the job changed since the decision
--   -3 the job key is not a hash (left untouched)
--   -6 the failed registry is not a sorted set (left untouched)
--   -11..-14 the gate refused the call (see gate.lua; nothing written for any job)
local codes = {}
local n = (#KEYS - 2) / 2
local refused = gate()
if refused then
  for i = 1, n do
    codes[i] = refused
  end
  return codes
end
local registry_ok = {}
for i = 0, n - 1 do
  local failed, job = KEYS[2*i+3], KEYS[2*i+4]
  local a = 2 + 5*i
  local id = ARGV[a]
  if registry_ok[failed] == nil then
    local t = redis.call('TYPE', failed).ok
    registry_ok[failed] = t == 'zset' or t == 'none'
  end
  local code
  if not registry_ok[failed] then
    code = -6
  else
    local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'retryd_exhausted', 'status')
    if cur.err then
      code = -3
    elseif not redis.call('ZSCORE', failed, id) then
      code = 0
    elseif not cur[2] and not cur[5] then
      code = -1
    elseif (cur[1] or '') ~= ARGV[a+1] or (cur[2] or '') ~= ARGV[a+2] or (cur[3] or '') ~= ARGV[a+3] then
      code = -2
    elseif (cur[2] or '') == '' and cur[5] ~= 'failed' then
      -- No ended_at (RQ failed it after its worker died): only while it is still a failure.
      code = -2
    elseif cur[4] == '1' then
      code = 2
    else
      redis.call('HSET', job, 'retryd_exhausted', '1', 'retryd_policy', ARGV[a+4])
      code = 1
    end
  end
  codes[i+1] = code
end
return codes

-- Requeue failed jobs that a queue-wide retry-now policy decides on, with the decision made
-- here, on what this call reads, in the same atomic step as the write (issue 24, item 1).
--
-- requeue.lua compares each job against what the client read and decided on; the client's read
-- (an HMGET per job) is then a second read of every hash. For a queue whose deciding policy
-- matches every job of the queue (no functions, exceptions, error_pattern or meta; see
-- `policy::reads_for`) and requeues at once (a backoff that is zero for every attempt, no
-- max_age, no hold_when, no circuit breaker, no requeue_to), the client's decision for a job
-- that decodes as a plain failure is exactly: requeue now as attempt retryd_attempts + 1 while
-- retryd_attempts < max_attempts. This script makes that decision itself, on the values it
-- reads in the same atomic step as its writes, so no read can be stale (the compare-and-set
-- of requeue.lua compares a read with itself here). It requeues a job only when it is sure
-- the client's decode and decision would say so; every other job gets 0, "decide on the
-- client": the caller reads it and goes through requeue.lua as before (which also reports
-- refusals, stopped and succeeded jobs exactly as before). A job is taken here only when:
--   it is in the failed registry (ZMSCORE), once in the call;
--   its hash has status "failed" and origin equal to the queue name (ARGV[11]);
--   ended_at is RQ's timestamp (YYYY-MM-DDTHH:MM:SS[.f to .ffffff]Z, a real date), which
--     `rq::job::parse_rq_timestamp` parses, and not after now (ARGV[7]; else the client's
--     decision is to wait);
--   retryd_attempts is unset, empty or 1-9 digits, and below max_attempts (ARGV[12]);
--   retryd_exhausted is unset, empty or "1";
--   its last run did not succeed (the newest result, as requeue.lua checks it: a success, or
--     a registry cleanup's failure after one, goes to the client);
--   its ttl and dependency sets pass requeue.lua's checks (else to the client, which refuses).
-- The writes are requeue.lua's for a policy's requeue, to the job's origin, with the audit
-- entry in the same step; and like requeue.lua, every command's ACL is asked before the first
-- write, and a denial anywhere sends every job of the call to the client (which reports it).
-- Keep the checks and writes in step with requeue.lua.
--
-- KEYS as requeue.lua: [1..3] the gate and the audit, [4] failed registry, [5] queue list,
--   [6] rq:queues, for job i KEYS[4i+3 .. 4i+6]: hash, dependents, dependencies, results.
-- ARGV[1..6] the gate and the audit entry (gate.lua), ARGV[7] now (RQ's format), ARGV[8]
-- policy name, ARGV[9] "1" to push at the front, ARGV[10] the queue key as rq:queues holds
-- it, ARGV[11] the queue's name, ARGV[12] max_attempts; ARGV[12+i] job i's id.
-- Returns one element per job: {ended_at, retryd_attempts as it was} for a job requeued, 0
-- for one left to the client.
local failed, queue, queues = KEYS[4], KEYS[5], KEYS[6]
local now, policy, target = ARGV[7], ARGV[8], ARGV[11]
local max_attempts = tonumber(ARGV[12])
local n = (#KEYS - 6) / 4
local codes = {}
for i = 1, n do
  codes[i] = 0
end
if gate() then
  return codes
end
local push = ARGV[9] == '1' and 'LPUSH' or 'RPUSH'
local ids = {}
for i = 1, n do
  ids[i] = ARGV[12+i]
end
if denied('TYPE', queue) or denied('TYPE', queues)
  or denied('ZMSCORE', failed, ids[1]) or denied('ZREM', failed, ids[1])
  or denied(push, queue, ids[1]) or denied('SADD', queues, ARGV[10])
  or audit_refusal() then
  return codes
end
local scores = redis.pcall('ZMSCORE', failed, unpack(ids))
if type(scores) == 'table' and scores.err then
  return codes
end
local t = redis.call('TYPE', queue).ok
if t ~= 'list' and t ~= 'none' then
  return codes
end
t = redis.call('TYPE', queues).ok
if t ~= 'set' and t ~= 'none' then
  return codes
end

local no_exc_info = 'x\156\3\0\0\0\0\1'
local max_ttl = 1e14

-- Whether `at` is an ended_at that parse_rq_timestamp surely parses (a subset of what it takes:
-- RQ's own format, a real date) and that is not after `now` (the failure is due at once);
-- false sends the job to the client. Both are compared as YYYY-MM-DDTHH:MM:SS.ffffff.
local days_in = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
local function due_failure(at)
  if type(at) ~= 'string' then
    return false
  end
  local y, mo, d, h, mi, s, rest = string.match(at,
    '^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$')
  if not y then
    return false
  end
  local fraction = rest == 'Z' and '' or string.match(rest, '^%.(%d%d?%d?%d?%d?%d?)Z$')
  if not fraction then
    return false
  end
  y, mo, d, h, mi, s = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s)
  if mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or s > 59 then
    return false
  end
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  if d > days_in[mo] + ((mo == 2 and leap) and 1 or 0) then
    return false
  end
  local key = string.sub(at, 1, 19) .. '.' .. fraction .. string.rep('0', 6 - #fraction)
  return key <= string.sub(now, 1, 26)
end

-- The value of field `name` of stream entry `entry`, or nil (as requeue.lua).
local function entry_field(entry, name)
  local fields = entry and entry[2] or {}
  for f = 1, #fields, 2 do
    if fields[f] == name then
      return fields[f+1]
    end
  end
  return nil
end

-- Whether the job's last run may have succeeded (requeue.lua's succeeded(), the doubtful
-- cases included): nil when surely not, else true (the client decides). A denied read is
-- a refusal: the string 'denied'.
local function maybe_succeeded(results)
  if denied('XREVRANGE', results, '+', '-', 'COUNT', '2') then
    return 'denied'
  end
  local entries = redis.pcall('XREVRANGE', results, '+', '-', 'COUNT', 1)
  if entries.err then
    return true
  end
  local newest = entries[1]
  local kind = entry_field(newest, 'type')
  if kind == '1' then
    return true
  end
  if kind == '2' and entry_field(newest, 'worker_name') == ''
    and entry_field(newest, 'execution_id') == nil then
    return true
  end
  return nil
end

-- The job's decision as requeue.lua's pass 1 would check it: a plan, 0 (to the client), or
-- 'denied' (every job of the call to the client).
local function decide(i, seen)
  local job, id = KEYS[4*i+3], ids[i]
  if not scores[i] or seen[id] then
    return 0
  end
  local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'ttl', 'retryd_exhausted',
    'status')
  if cur.err then
    return denied('HMGET', job, 'origin') and 'denied' or 0
  end
  if cur[6] ~= 'failed' or cur[1] ~= target or not due_failure(cur[2]) then
    return 0
  end
  local stored = cur[3] or ''
  if stored ~= '' and not string.match(stored, '^%d%d?%d?%d?%d?%d?%d?%d?%d?$') then
    return 0
  end
  local attempts = tonumber(stored) or 0
  if attempts >= max_attempts then
    return 0
  end
  if cur[5] and cur[5] ~= '' and cur[5] ~= '1' then
    return 0
  end
  local done = maybe_succeeded(KEYS[4*i+6])
  if done then
    return done == 'denied' and done or 0
  end
  local ttl = tonumber(cur[4] or '')
  if ttl and ttl > 0 and not (ttl < max_ttl) then
    return 0
  end
  local lives = {job}
  local dependents, dependencies = KEYS[4*i+4], KEYS[4*i+5]
  if denied('EXISTS', dependents, dependencies) then
    return 'denied'
  end
  if redis.call('EXISTS', dependents, dependencies) > 0 then
    for _, set in ipairs({dependents, dependencies}) do
      if denied('TYPE', set) then
        return 'denied'
      end
      local kind = redis.call('TYPE', set).ok
      if kind == 'set' then
        lives[#lives+1] = set
      elseif kind ~= 'none' then
        return 0
      end
    end
  end
  local expire = ttl and ttl > 0
  if denied('HSET', job, 'status', 'queued') or (cur[5] and denied('HDEL', job, 'retryd_exhausted')) then
    return 'denied'
  end
  for _, key in ipairs(lives) do
    if (expire and denied('EXPIRE', key, '1')) or (not expire and denied('PERSIST', key)) then
      return 'denied'
    end
  end
  return {job = job, lives = lives, attempts = tostring(attempts + 1), exhausted = cur[5],
    ttl = expire and ttl, ended_at = cur[2], stored = stored}
end

-- Pass 1, reads only.
local moved, seen, plan, at = {}, {}, {}, {}
for i = 1, n do
  local p = decide(i, seen)
  if p == 'denied' then
    for j = 1, n do
      codes[j] = 0
    end
    return codes
  end
  seen[ids[i]] = true
  if p ~= 0 then
    plan[#plan+1] = p
    moved[#moved+1] = ids[i]
    at[#at+1] = i
  end
end

-- Pass 2, writes only: requeue.lua's for a policy's requeue to the job's own origin.
for k, p in ipairs(plan) do
  local job = p.job
  redis.call('HSET', job, 'status', 'queued', 'enqueued_at', now, 'started_at', '', 'ended_at', '',
    'exc_info', no_exc_info, 'retryd_policy', policy, 'retryd_requeued_at', now,
    'retryd_attempts', p.attempts)
  if p.exhausted then
    redis.call('HDEL', job, 'retryd_exhausted')
  end
  for _, key in ipairs(p.lives) do
    if p.ttl then
      redis.call('EXPIRE', key, string.format('%d', math.max(1, math.floor(p.ttl))))
    else
      redis.call('PERSIST', key)
    end
  end
  codes[at[k]] = {p.ended_at, p.stored}
end
if #moved > 0 then
  redis.call('ZREM', failed, unpack(moved))
  redis.call(push, queue, unpack(moved))
  redis.call('SADD', queues, ARGV[10])
end
audit(moved, target)
return codes

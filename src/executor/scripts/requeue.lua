-- Requeue failed jobs atomically, each only if it is still the failure the caller decided on.
-- This is RQ's FailedJobRegistry.requeue in one step per job: RQ does the ZREM and the enqueue
-- in two round trips, so a crash between them loses the job; here both happen or neither does.
-- One call handles up to 50 jobs (SCRIPT_BATCH) of one failed registry going to one queue, so the registry
-- check, the ZREM, the push and the audit entry (XADD) are one command each for the whole call,
-- and a job costs four: HMGET (the compare), EXISTS (its dependency sets), HSET and
-- PERSIST/EXPIRE; a job with dependency sets also a TYPE and a PERSIST/EXPIRE per set; a job
-- going to another queue than its origin (a policy's requeue_to) one more HSET (its origin); a
-- policy's requeue also an XREVRANGE of its newest result (a second one, of two entries, only
-- when that result is a registry cleanup's failure; see below). Measured on 20,000 requeues
-- (50 per call, Redis 7.0, 2 shared cores, median of 5): 193 ms of EVALSHA time before the
-- check, 281 ms with it, about 4.5 us more per job.
--
-- A policy's requeue (one that counts an attempt; never an operator's) leaves alone a job
-- that must not run again by itself (issue 21): one RQ marks stopped (an operator stopped
-- it), and one whose last run succeeded (rq/rq#2424: RQ's StartedJobRegistry.cleanup failed a
-- finished job as abandoned). The scan does not read the results stream when it decides
-- (for cost), so this is where that is checked, before the first write, by the rule of
-- `rq::job::succeeded_at` (keep the two in step): the newest results entry is a success
-- (type 1), or it is the failure a registry cleanup writes (type 2, worker_name present and
-- empty, no execution_id; RQ 2.x) and the entry before it is a success.
--
-- The job's dependency sets (rq:job:<id>:dependents, :dependencies) got the failure's EXPIRE
-- with the hash (RQ's Job.cleanup(failure_ttl)). They are made to live exactly as long as the
-- job: PERSISTed with it, or given its own ttl with it (what RQ's enqueue, Job.cleanup(ttl),
-- does to all three keys). Else a parent requeued near its failure_ttl loses its dependents
-- set, finishes with no one to enqueue, and its children stay deferred for good (issue 21).
-- RQ's own requeue leaves all three keys with the failure's EXPIRE when the job has no ttl
-- (only the worker's perform() PERSISTs the hash, never the sets): that is RQ's gap, not kept.
--
-- Redis does not roll back a script whose later command fails: the writes before it stay. So
-- everything that could make a write fail is checked before the first write, and a job that
-- cannot be written whole is not written at all. Checked: the type of the failed registry, the
-- queue list and rq:queues (once per call), the type of each job hash (HMGET under pcall) and
-- each job's ttl (EXPIRE refuses a value it cannot represent), the type of its results
-- stream (a policy's requeue: XREVRANGE under pcall), and the type of each
-- dependency set that exists (one that is not a set is not RQ's: the job is not written,
-- as purge.lua leaves such a job). Nothing after the checks can
-- fail on data: HSET/HDEL/PERSIST/EXPIRE on a hash with a valid ttl, ZREM on a sorted set,
-- LPUSH/RPUSH on a list, SADD on a set. Server-wide refusals (OOM, READONLY, MISCONF) hit the
-- first write, when nothing is written yet.
--
-- Nor can an ACL refuse a command halfway: the script runs in two passes. The first only reads
-- and decides, asking before each read and for each job it will write whether the user may run
-- that command on that key (denied(), gate.lua); the second writes. Any denial returns
-- forbidden_by_acl for every job of the call before the first write. Checked once per call:
-- the gate's reads, TYPE of the queue list and rq:queues (the registry's type shows in its
-- ZMSCORE under pcall, the audit stream's in the fold's XREVRANGE, or its TYPE for a manual
-- write), XADD on the audit stream, ZMSCORE and ZREM on the registry, the push (RPUSH or LPUSH, the one this call uses) on the queue,
-- SADD on rq:queues; per job key:
-- EXISTS when it reads it, HMGET only once its pcall failed (to tell a denied read
-- from a wrong type; a read writes nothing, so asking after it is enough and keeps the hot path
-- short), XREVRANGE on its results stream (a policy's requeue), EXISTS on its two dependency
-- sets (one call for both) and TYPE on each that exists,
-- then for a job it will write HSET, HDEL (only when it clears retryd_exhausted) and the
-- one of EXPIRE/PERSIST it will run, on the hash and on each dependency set that exists.
--
-- KEYS[1..3], ARGV[1..6]: the gate and the audit entry (gate.lua, prepended)
-- KEYS[4] failed registry (zset), KEYS[5] queue list, KEYS[6] set of known queues (rq:queues),
-- For job i (1-based), KEYS[4i+3 .. 4i+6]: its job hash, dependents set, dependencies set,
--   results stream (rq:results:<id>)
-- ARGV[7] now in RQ's timestamp format (enqueued_at, retryd_requeued_at)
-- ARGV[8] policy name (stored in retryd_policy), ARGV[9] "1" to push at the front (LPUSH) else
-- RPUSH, ARGV[10] the queue key as rq:queues holds it, ARGV[11] the name of the queue KEYS[5]
-- is: a job whose origin differs (a policy's requeue_to) gets it as its origin, so RQ's
-- workers and registries see the job there; a job already of that origin is left as it is
-- For job i, ARGV[5i+7 .. 5i+11]: job id, expected origin ("" when missing), expected ended_at,
--   expected retryd_attempts ("" when unset), new retryd_attempts ("" for a manual retry: left
--   as it is, and the job requeued even when stopped or succeeded)
-- Returns one code per job:
--    1 requeued
--    0 not in the failed registry (someone else moved it, or it came twice in this call)
--   -1 job hash missing (registry entry without a job)
--   -2 the job changed since the decision (origin, ended_at or attempts differ)
--   -3 the job key is not a hash (nothing written)
--   -4 the queue list is not a list (nothing written for any job of the call)
--   -5 rq:queues is not a set (nothing written for any job of the call)
--   -6 the failed registry is not a sorted set (nothing written for any job of the call)
--   -7 the job's ttl field is a number EXPIRE cannot take (nothing written)
--   -8 the dependents key is not a set (nothing written)
--   -9 the dependencies key is not a set (nothing written)
--  -10 the results key is not a stream (a policy's requeue; nothing written)
--  -16 the audit key is not a stream (nothing written for any job of the call)
--   -11..-14 the gate refused the call (see gate.lua; nothing written for any job)
--   {-15, COMMAND, key} forbidden_by_acl: the user may not run COMMAND on key (an array in
--     place of the code; nothing written for any job of the call)
--  -18 a policy's requeue of a job RQ marks stopped (nothing written)
--  -19 a policy's requeue of a job whose last run succeeded (nothing written)
local failed, queue, queues = KEYS[4], KEYS[5], KEYS[6]
local now, policy, target = ARGV[7], ARGV[8], ARGV[11]
local n = (#KEYS - 6) / 4
local codes = {}

-- Refuses every job of the call: a key they share is of the wrong type, or a command is denied.
local function refuse_all(code)
  for i = 1, n do
    codes[i] = code
  end
  return codes
end
local refused = gate()
if refused then
  return refuse_all(refused)
end
local push = ARGV[9] == '1' and 'LPUSH' or 'RPUSH'
local ids = {}
for i = 1, n do
  ids[i] = ARGV[5*i+7]
end
refused = denied('TYPE', queue) or denied('TYPE', queues)
  or denied('ZMSCORE', failed, ids[1]) or denied('ZREM', failed, ids[1])
  or denied(push, queue, ids[1]) or denied('SADD', queues, ARGV[10])
  or audit_refusal()
if refused then
  return refuse_all(refused)
end
-- The registry's scores under pcall: the read fails (WRONGTYPE) exactly where a TYPE check
-- would refuse, so it is the check too (issue 24, item 2: one command per call fewer).
local scores = redis.pcall('ZMSCORE', failed, unpack(ids))
if type(scores) == 'table' and scores.err then
  return refuse_all(-6)
end
local t = redis.call('TYPE', queue).ok
if t ~= 'list' and t ~= 'none' then
  return refuse_all(-4)
end
t = redis.call('TYPE', queues).ok
if t ~= 'set' and t ~= 'none' then
  return refuse_all(-5)
end

-- What RQ's own requeue leaves in exc_info: zlib.compress(b'').
local no_exc_info = 'x\156\3\0\0\0\0\1'
-- EXPIRE takes whole seconds up to what its millisecond clock can hold; a bigger value (or one
-- that Lua would print as 1e+15) is refused by Redis, so it is refused here, before writing.
local max_ttl = 1e14

-- The value of field `name` of stream entry `entry` ({id, {field, value, ...}}), or nil.
local function entry_field(entry, name)
  local fields = entry and entry[2] or {}
  for f = 1, #fields, 2 do
    if fields[f] == name then
      return fields[f+1]
    end
  end
  return nil
end

-- Whether the last run of the job whose results stream is `results` succeeded (see the
-- header): true/false, or the code to return for the job (a denied read, a wrong type).
-- The newest entry alone settles it but for a registry cleanup's failure; only then is the
-- one before it read (most results hold a traceback: reading two would copy both).
local function succeeded(results)
  local no = denied('XREVRANGE', results, '+', '-', 'COUNT', '2')
  if no then
    return no
  end
  local entries = redis.pcall('XREVRANGE', results, '+', '-', 'COUNT', 1)
  if entries.err then
    return -10
  end
  local newest = entries[1]
  local kind = entry_field(newest, 'type')
  if kind == '1' then
    return true
  end
  if kind ~= '2' or entry_field(newest, 'worker_name') ~= ''
    or entry_field(newest, 'execution_id') ~= nil then
    return false
  end
  entries = redis.call('XREVRANGE', results, '+', '-', 'COUNT', 2)
  return entry_field(entries[2], 'type') == '1'
end

-- Pass 1, reads only: the code of each job, and for each job to move what its write will run.
-- Returns the job's code, or the forbidden_by_acl code (a table) to refuse the whole call with.
local moved, seen = {}, {}
local plan = {}
local function decide(i)
  local job, a, id = KEYS[4*i+3], 5*i+7, ids[i]
  if not scores[i] or seen[id] then
    return 0
  end
  local no
  -- Every field read here costs Lua time on the hot path: only what the compare and the
  -- write need. A failed job has ended_at, except one RQ failed after its worker died
  -- (AbandonedJobError): without one, the job is acted on only when the caller decided on
  -- exactly that (expected "") and it is still a failure (status failed, or stopped: RQ
  -- fails a stopped job without one too), else nothing is written whatever the caller
  -- expected.
  local cur = redis.pcall('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'ttl', 'retryd_exhausted',
    'status')
  if cur.err then
    -- Not a hash, or (asked only now, off the hot path) an HMGET the user may not run.
    return denied('HMGET', job, 'origin') or -3
  end
  local ttl = tonumber(cur[4] or '')
  if (cur[2] or '') == '' then
    no = denied('EXISTS', job)
    if no then
      return no
    end
    if redis.call('EXISTS', job) == 0 then
      return -1
    end
    if ARGV[a+2] ~= '' then
      return -2
    end
    if cur[6] ~= 'failed' and cur[6] ~= 'stopped' then
      return -2
    end
  end
  if (cur[1] or '') ~= ARGV[a+1] or (cur[2] or '') ~= ARGV[a+2] or (cur[3] or '') ~= ARGV[a+3] then
    return -2
  end
  if ARGV[a+4] ~= '' then
    if cur[6] == 'stopped' then
      return -18
    end
    local done = succeeded(KEYS[4*i+6])
    if done == true then
      return -19
    elseif done then
      return done
    end
  end
  if ttl and ttl > 0 and not (ttl < max_ttl) then
    return -7
  end
  -- The dependency sets that exist go with the hash. Most jobs have none: one EXISTS for both.
  local lives = {job}
  local dependents, dependencies = KEYS[4*i+4], KEYS[4*i+5]
  no = denied('EXISTS', dependents, dependencies)
  if no then
    return no
  end
  if redis.call('EXISTS', dependents, dependencies) > 0 then
    for _, set in ipairs({{dependents, -8}, {dependencies, -9}}) do
      no = denied('TYPE', set[1])
      if no then
        return no
      end
      local kind = redis.call('TYPE', set[1]).ok
      if kind == 'set' then
        lives[#lives+1] = set[1]
      elseif kind ~= 'none' then
        return set[2]
      end
    end
  end
  local expire = ttl and ttl > 0
  no = denied('HSET', job, 'status', 'queued')
    or (cur[5] and denied('HDEL', job, 'retryd_exhausted'))
  if no then
    return no
  end
  for _, key in ipairs(lives) do
    no = (expire and denied('EXPIRE', key, '1')) or (not expire and denied('PERSIST', key))
    if no then
      return no
    end
  end
  plan[#plan+1] = {job = job, lives = lives, attempts = ARGV[a+4], exhausted = cur[5],
    ttl = expire and ttl, origin = (cur[1] or '') ~= target}
  moved[#moved+1] = id
  return 1
end
for i = 1, n do
  local code = decide(i)
  if type(code) == 'table' then
    return refuse_all(code)
  end
  seen[ids[i]] = true
  codes[i] = code
end

-- Pass 2, writes only: nothing here can fail on data or on the ACL.
for _, p in ipairs(plan) do
  local job = p.job
  if p.attempts ~= '' then
    redis.call('HSET', job, 'status', 'queued', 'enqueued_at', now, 'started_at', '', 'ended_at', '',
      'exc_info', no_exc_info, 'retryd_policy', policy, 'retryd_requeued_at', now,
      'retryd_attempts', p.attempts)
  else
    redis.call('HSET', job, 'status', 'queued', 'enqueued_at', now, 'started_at', '', 'ended_at', '',
      'exc_info', no_exc_info, 'retryd_policy', policy, 'retryd_requeued_at', now)
  end
  if p.exhausted then
    redis.call('HDEL', job, 'retryd_exhausted')
  end
  if p.origin then
    redis.call('HSET', job, 'origin', target)
  end
  -- Like RQ's enqueue: a job with its own ttl expires after it, its dependency sets with it;
  -- otherwise none of them may expire while it waits in the queue (the failure_ttl EXPIRE
  -- from the failure would still be there).
  for _, key in ipairs(p.lives) do
    if p.ttl then
      redis.call('EXPIRE', key, string.format('%d', math.max(1, math.floor(p.ttl))))
    else
      redis.call('PERSIST', key)
    end
  end
end
if #moved > 0 then
  redis.call('ZREM', failed, unpack(moved))
  redis.call(push, queue, unpack(moved))
  redis.call('SADD', queues, ARGV[10])
end
audit(moved, target)
return codes

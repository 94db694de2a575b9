#!/usr/bin/env python3
"""How fast could any requeue be here? An upper bound, not a contender.

Requeues every job of a seeded snapshot with no client read at all: one Lua call per 50 ids from
ZRANGE windows does what rq-retryd's requeue does per job (HMGET, HSET, PERSIST; ZMSCORE, ZREM and
RPUSH per call), with the decision (attempts < max) in Lua and no compare against a client's read,
no traceback, no SCAN, no logging. rq-retryd cannot do this in general (its policies decide on
functions, exceptions, tracebacks and backoff times on the client, and the compare-and-set is what
makes a stale decision a no-op); it shows where 50x RQ would sit even for a design that gave all
that up. See docs/benchmarks.md.

    target/venv-rq2/bin/python bench/bound.py target/bench/seed-100000-default-emails-reports-venv-rq2.rdb
(the snapshot is what `bench/run.sh --count 100000 --reuse-seed` keeps)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port  # noqa: E402

SCRIPT = r"""
local failed, queue = KEYS[1], KEYS[2]
local now, policy, max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = {}
for i = 4, #ARGV do ids[#ids+1] = ARGV[i] end
local scores = redis.call('ZMSCORE', failed, unpack(ids))
local moved = {}
local no_exc_info = 'x\156\3\0\0\0\0\1'
for i, id in ipairs(ids) do
  if scores[i] then
    local job = 'rq:job:' .. id
    local cur = redis.call('HMGET', job, 'origin', 'ended_at', 'retryd_attempts', 'ttl', 'retryd_exhausted')
    local attempts = tonumber(cur[3] or '0') or 0
    if cur[2] and attempts < max then
      redis.call('HSET', job, 'status', 'queued', 'enqueued_at', now, 'started_at', '', 'ended_at', '',
        'exc_info', no_exc_info, 'retryd_policy', policy, 'retryd_requeued_at', now,
        'retryd_attempts', tostring(attempts + 1))
      redis.call('PERSIST', job)
      moved[#moved+1] = id
    end
  end
end
if #moved > 0 then
  redis.call('ZREM', failed, unpack(moved))
  redis.call('RPUSH', queue, unpack(moved))
end
return #moved
"""


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    work = tempfile.mkdtemp(prefix="rq-retryd-bound-")
    shutil.copy(sys.argv[1], os.path.join(work, "dump.rdb"))
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", work, "--dbfilename", "dump.rdb"],
                              stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(300):
            try:
                if not r.info("persistence").get("loading"):
                    break
            except redis.ConnectionError:
                pass
            time.sleep(0.1)
        sha = r.script_load(SCRIPT)
        queues = sorted(q.decode().split(":", 2)[2] for q in r.smembers("rq:queues"))
        total = sum(r.zcard(f"rq:failed:{q}") for q in queues)
        cpu = r.info("cpu")
        cpu0 = cpu["used_cpu_user"] + cpu["used_cpu_sys"]
        t0 = time.perf_counter()
        moved = 0
        for q in queues:
            while True:
                ids = [x.decode() for x in r.zrange(f"rq:failed:{q}", 0, 1999)]
                if not ids:
                    break
                pipe = r.pipeline(transaction=False)
                for i in range(0, len(ids), 50):
                    pipe.evalsha(sha, 2, f"rq:failed:{q}", f"rq:queue:{q}", "2026-01-01T00:00:00.000000Z",
                                 "bound", 1, *ids[i:i + 50])
                moved += sum(pipe.execute())
        elapsed = time.perf_counter() - t0
        cpu = r.info("cpu")
        redis_cpu = cpu["used_cpu_user"] + cpu["used_cpu_sys"] - cpu0
        if moved != total:
            raise SystemExit(f"requeued {moved} of {total}")
        print(f"bound    {moved / elapsed:.0f} jobs/s ({elapsed:.2f}s); redis cpu {redis_cpu / moved * 1e6:.2f} us/job, "
              f"{moved / redis_cpu:.0f} jobs/s if Redis were 100% busy")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

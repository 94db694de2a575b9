#!/usr/bin/env python3
"""Redis CPU per job of each step of the requeue script's first pass (issue 24, item 1).

Restores a seeded snapshot (bench.py's, under target/bench/) into a throwaway redis-server and
runs pieces of requeue.lua's read-only pass over 60,000 of its failed jobs, 50 jobs per EVALSHA
call as the executor sends them. Prints the Redis CPU per job of each piece (the best of 3 passes;
subtract `empty`, the cost of the call and its keys). Nothing is written to the jobs; an audit
stream of 20 entries of 100 ids each, like the one a bulk run leaves, is added for the fold's read.

usage: target/venv-rq2/bin/python bench/script_steps.py target/bench/seed-100000-default-emails-reports-venv-rq2-x2.rdb
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

PROLOGUE = """
local acl = redis.acl_check_cmd
local function denied(c, k, ...) if acl and not acl(c, k, ...) then return {-15, c, k} end return nil end
local function field(entry, name)
  local f = entry and entry[2] or {}
  for i = 1, #f, 2 do if f[i] == name then return f[i+1] end end
  return nil
end
local n = #KEYS / 4
local acc = 0
"""
# Each as requeue.lua and gate.lua run it; KEYS per job: hash, dependents, dependencies, results.
STEPS = {
    "empty": "for i = 1, n do acc = acc + 1 end",
    "hmget (the compare)": "for i = 1, n do local c = redis.pcall('HMGET', KEYS[4*i-3], 'origin', 'ended_at', "
                           "'retryd_attempts', 'ttl', 'retryd_exhausted', 'status') acc = acc + #c end",
    "4 acl questions": "for i = 1, n do local j = KEYS[4*i-3] local no = denied('XREVRANGE', KEYS[4*i], '+', '-', "
                       "'COUNT', '2') or denied('EXISTS', KEYS[4*i-2], KEYS[4*i-1]) or denied('HSET', j, 'status', "
                       "'queued') or denied('PERSIST', j) if no then acc = acc + 1 end end",
    "xrevrange (succeeded check)": "for i = 1, n do local e = redis.pcall('XREVRANGE', KEYS[4*i], '+', '-', 'COUNT', 1) "
                                   "if field(e[1], 'type') == '1' then acc = acc + 1 end end",
    "exists (dependency sets)": "for i = 1, n do acc = acc + redis.call('EXISTS', KEYS[4*i-2], KEYS[4*i-1]) end",
    "audit fold, newest 16": "local a = redis.pcall('XREVRANGE', 'bench:audit', '+', '-', 'COUNT', 16) acc = #a",
    "audit fold, newest 1": "local a = redis.pcall('XREVRANGE', 'bench:audit', '+', '-', 'COUNT', 1) acc = #a",
}


def main():
    snap = sys.argv[1]
    work = tempfile.mkdtemp(prefix="rq-retryd-steps-")
    server = bench.Server(os.path.join(work, "redis"))
    os.makedirs(server.dir)
    try:
        server.restore(snap)
        r = server.client()
        ids = []
        for key in r.scan_iter(match="rq:failed:*", _type="zset"):
            ids += [x.decode() for x in r.zrange(key, 0, -1)]
        ids = ids[:60000]
        for e in range(20):
            some = ids[e * 100:(e + 1) * 100]
            r.xadd("bench:audit", {"at": "2026-12-04T10:00:00Z", "who": "rq-retryd", "action": "requeue",
                                   "why": "p", "queue": "default", "count": 100, "job_ids": ",".join(some),
                                   "job_ids_json": json.dumps(some), "to_queue": "default"})
        for name, body in STEPS.items():
            sha = r.script_load(PROLOGUE + body + "\nreturn acc")
            best = None
            for _ in range(3):
                before = bench.redis_cpu_seconds(r)
                pipe = r.pipeline(transaction=False)
                for b in range(0, len(ids), 50):
                    keys = []
                    for j in ids[b:b + 50]:
                        keys += [f"rq:job:{j}", f"rq:job:{j}:dependents", f"rq:job:{j}:dependencies", f"rq:results:{j}"]
                    pipe.evalsha(sha, len(keys), *keys)
                    if len(pipe) >= 20:
                        pipe.execute()
                pipe.execute()
                per_job = (bench.redis_cpu_seconds(r) - before) / len(ids) * 1e6
                best = per_job if best is None else min(best, per_job)
            print(f"{name:30} {best:6.2f} us of Redis CPU per job", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark of one job's history, `GET /api/v1/failed-jobs/{id}/history` (issue 22, item 3),
with a full audit stream.

A throwaway redis-server gets N failed jobs written as RQ 2.x writes them (hash, failed
registry entry, one failure result each; raw pipelined writes, not RQ's code, so a million
takes a minute, not an hour) and a full audit stream: --audit entries (default 10,000, the
stream's cap) of 100 job ids each, listed twice (`job_ids`, `job_ids_json`) as the write scripts
write them, about 85 MB. `rq-retryd run` (--binary) answers after its first full scan.

Measured, all over loopback from this process:
  cold      the first history request: the daemon reads the whole audit stream once
  warm      --requests requests for random jobs named by one entry each (p50, p99, max)
  appending the same while another client appends 20 entries a second (100 ids each), so each
            request also reads what was appended since the one before
  absent    a job no entry names (its hash and result exist)
  commands  Redis commands per warm request (INFO commandstats around 20 requests)
  rss       the daemon's VmRSS before the cold request and after the last, and VmHWM

usage: bench/history.py [--jobs 1000000] [--audit 10000] [--requests 300]
                        [--binary target/release/rq-retryd] [--json out.json] [--seed-only] [--reseed]

The seeded jobs are kept as target/bench/history-N.rdb and loaded from there the next time.
"""
import argparse
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Server, free_port, peak_rss_kib, percentiles, REPO)
from index_api import BigServer  # noqa: E402

TRACEBACK = ("Traceback (most recent call last):\n  File \"/srv/app/tasks.py\", line 10, in run\n"
             "    do()\nConnectionError: upstream timed out (job {i})\n")
POLICIES = """
[[policy]]
name = "slow-retry"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "30d" }
"""


def job_id(i):
    """UUID-shaped ids, as RQ makes them (36 characters)."""
    return f"{i:08x}-0000-4000-8000-{i:012x}"


def seed_jobs(r, count):
    now = time.time()
    ended = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now - 60))
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        jid = job_id(i)
        pipe.hset(f"rq:job:{jid}", mapping={
            "status": "failed", "origin": "default", "description": "app.tasks.run(42)",
            "created_at": ended, "enqueued_at": ended, "started_at": ended, "ended_at": ended,
            "failure_ttl": "31536000", "worker_name": "bench"})
        pipe.zadd("rq:failed:default", {jid: now + 31536000})
        exc = base64.b64encode(zlib.compress(TRACEBACK.format(i=i).encode())).decode()
        pipe.xadd(f"rq:results:{jid}", {"type": 2, "exc_string": exc, "worker_name": "bench"},
                  maxlen=10)
        if i % 10000 == 9999:
            pipe.execute()
    pipe.sadd("rq:queues", "rq:queue:default")
    pipe.execute()


def audit_fields(ids, who="supervisor"):
    return {"at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "who": who,
            "action": "requeue", "why": "slow-retry", "queue": "default", "count": len(ids),
            "job_ids": ",".join(ids), "job_ids_json": json.dumps(ids)}


def seed_audit(r, entries, jobs):
    pipe = r.pipeline(transaction=False)
    for e in range(entries):
        ids = [job_id((e * 100 + k) % jobs) for k in range(100)]
        pipe.xadd("rq:retryd:audit", audit_fields(ids))
        if e % 500 == 499:
            pipe.execute()
    pipe.execute()


def get(port, path):
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as resp:
        body = json.load(resp)
    return time.perf_counter() - start, body


def history(port, jid):
    return get(port, f"/api/v1/failed-jobs/{jid}/history")


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return 0


def commands(r):
    stats = r.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--audit", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--binary", default=os.path.join(bench.REPO, "target", "release", "rq-retryd"))
    p.add_argument("--json")
    p.add_argument("--seed-only", action="store_true", help="make the cached snapshot of the jobs and stop")
    p.add_argument("--reseed", action="store_true", help="seed the jobs again even when the snapshot exists")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="rq-retryd-history-")
    # The seeded jobs (not the audit) are kept as an RDB under target/bench/, as index_api.py
    # keeps its own: seeding a million takes minutes, loading them seconds.
    cached = os.path.join(bench.REPO, "target", "bench", f"history-{args.jobs}.rdb")
    if os.path.exists(cached) and not args.reseed:
        shutil.copy(cached, os.path.join(work, "dump.rdb"))
    server = BigServer(work)  # waits as long as loading the snapshot takes
    server.start()
    daemon = None
    try:
        r = server.client()
        t = time.time()
        if r.zcard("rq:failed:default") != args.jobs:
            r.flushall()
            seed_jobs(r, args.jobs)
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            server.snapshot(cached)
        if args.seed_only:
            print(f"seeded {args.jobs} jobs; snapshot {cached}", flush=True)
            return
        seed_audit(r, args.audit, args.jobs)
        seeded = {"jobs": args.jobs, "audit_entries": r.xlen("rq:retryd:audit"),
                  "audit_mib": round(r.memory_usage("rq:retryd:audit") / 2**20, 1),
                  "seconds": round(time.time() - t, 1)}
        print("seeded", seeded, flush=True)
        port = bench.free_port()
        config = os.path.join(work, "rq-retryd.toml")
        with open(config, "w") as f:
            f.write(f'[redis]\nurl = "{server.url}"\n[supervisor]\nscan_interval = "1h"\n'
                    f'[http]\nlisten = "127.0.0.1:{port}"\n[logging]\nlevel = "warn"\n{POLICIES}')
        daemon = subprocess.Popen([args.binary, "--config", config, "run"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t = time.time()
        while True:
            try:
                if get(port, "/api/v1/supervisor")[1].get("last_scan"):
                    break
            except OSError:
                pass
            if time.time() - t > 1800:
                raise SystemExit("the daemon's first scan did not finish")
            time.sleep(0.2)
        result = {"seeded": seeded, "first_scan_s": round(time.time() - t, 1),
                  "rss_before_mib": vm(daemon.pid, "VmRSS")}
        named = lambda: job_id(random.randrange(min(args.jobs, args.audit * 100)))
        cold, body = history(port, named())
        result["cold_ms"] = round(cold * 1000, 1)
        result["audit_searched"] = body["audit_searched"]
        warm = [history(port, named())[0] for _ in range(args.requests)]
        result["warm"] = bench.percentiles(warm) | {"p99_ms": round(sorted(warm)[int(0.99 * len(warm))] * 1000, 1)}
        before = commands(r)
        for _ in range(20):
            history(port, named())
        result["redis_commands_per_request"] = round((commands(r) - before) / 20, 1)
        stop = threading.Event()

        def append():
            w = server.client()
            n = 0
            while not stop.is_set():
                ids = [job_id(random.randrange(args.jobs)) for _ in range(100)]
                w.xadd("rq:retryd:audit", audit_fields(ids), maxlen=10000, approximate=True)
                n += 1
                time.sleep(0.05)

        appender = threading.Thread(target=append)
        appender.start()
        try:
            appending = [history(port, named())[0] for _ in range(args.requests)]
        finally:
            stop.set()
            appender.join()
        result["appending"] = bench.percentiles(appending) | {"p99_ms": round(sorted(appending)[int(0.99 * len(appending))] * 1000, 1)}
        absent_job = job_id(args.jobs - 1) if args.jobs > args.audit * 100 else None
        if absent_job:
            absent = [history(port, absent_job)[0] for _ in range(50)]
            result["absent"] = bench.percentiles(absent)
        result["rss_after_mib"] = vm(daemon.pid, "VmRSS")
        result["rss_peak_mib"] = vm(daemon.pid, "VmHWM")
        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait(timeout=60)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

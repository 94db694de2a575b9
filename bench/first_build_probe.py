#!/usr/bin/env python3
"""New failures while the daemon builds its first view of a large Redis (issue 24, items 3
and 4): every `--every` seconds, fails one job in queue `react` (a policy retries it at once)
and one in `react5` (retried 5 s after its failure), through RQ's own code as a worker's
failure handler does (tests/python/seed_failed_jobs.py's steps), and times each from the
moment its failure is written to the moment its status is `queued` (polled every 10 ms):

  reaction   `react`: the notified reaction;
  due        `react5`: requeued minus due (failure + 5 s): how late the due pass is.

The daemon's config must hold its two policies (`--policies` prints them) before any other.

usage: first_build_probe.py --url redis://127.0.0.1:PORT/0 --seconds 200 [--every 5] [--json F]
       first_build_probe.py --policies
Run it with the RQ venv's python (target/venv-rq2/bin/python); it sets
notify-keyspace-events to Kz on that Redis.
"""
import argparse
import json
import time

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result

DUE_AFTER_S = 5.0


def retry_policy(queue, delay_s):
    """A policy that retries the failures of `queue` (and only those) `delay_s` after each."""
    return (f'[[policy]]\nname = "{queue}"\nqueues = ["{queue}"]\naction = "retry"\nmax_attempts = 3\n'
            f'backoff = {{ strategy = "fixed", delay = "{delay_s:g}s" }}\n')


POLICIES = retry_policy("react", 0) + retry_policy("react5", DUE_AFTER_S)


def fail_one(conn, queue):
    """One failed job in `queue`, written as RQ's worker writes it; returns (id, written at)."""
    q = Queue(queue, connection=conn)
    job = Job.create("app.workers.probe.ping", args=(1,), connection=conn, origin=q.name, timeout=180)
    job.origin = q.name
    job.enqueued_at = job.started_at = job.ended_at = job.created_at
    job.worker_name = "probe-worker"
    exc = "Traceback (most recent call last):\n  File \"probe.py\", line 1, in ping\nConnectionError: probe\n"
    written = time.time()
    with conn.pipeline() as p:
        job.save(pipeline=p)
        job.set_status(JobStatus.FAILED, pipeline=p)
        FailedJobRegistry(q.name, connection=conn).add(job, ttl=job.failure_ttl, exc_string=exc, pipeline=p)
        Result.create_failure(job, job.failure_ttl, exc_string=exc, pipeline=p, worker_name="probe-worker")
        p.sadd("rq:queues", q.key)
        p.execute()
    return job.id, written


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", action="store_true", help="print the policies the daemon needs and stop")
    ap.add_argument("--url")
    ap.add_argument("--seconds", type=float, default=200)
    ap.add_argument("--every", type=float, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.policies:
        print(POLICIES)
        return
    if not args.url:
        ap.error("--url is required")
    conn = Redis.from_url(args.url)
    conn.config_set("notify-keyspace-events", "Kz")
    pending = {}  # id -> (kind, written, sent at start)
    done = {"reaction": [], "due": []}
    started = time.time()
    next_probe = started
    while time.time() - started < args.seconds or pending:
        now = time.time()
        if now >= next_probe and now - started < args.seconds:
            for queue, kind in (("react", "reaction"), ("react5", "due")):
                jid, written = fail_one(conn, queue)
                pending[jid] = (kind, written, written - started)
            next_probe += args.every
        if time.time() - started > args.seconds + 600:
            break
        ids = list(pending)
        if ids:
            with conn.pipeline(transaction=False) as p:
                for jid in ids:
                    p.hget(f"rq:job:{jid}", "status")
                statuses = p.execute()
            seen = time.time()
            for jid, status in zip(ids, statuses):
                if status == b"queued":
                    kind, written, at = pending.pop(jid)
                    late = seen - written - (DUE_AFTER_S if kind == "due" else 0)
                    done[kind].append({"at_s": round(at, 1), "ms": round(late * 1000)})
        time.sleep(0.01)
    out = {"every_s": args.every, "seconds": args.seconds, "unqueued": len(pending), "samples": done}
    for kind, rows in done.items():
        ms = [r["ms"] for r in rows]
        out[kind] = {"n": len(ms), "p50_ms": percentile(ms, 0.5), "max_ms": max(ms) if ms else None}
        by_time = ", ".join(f"{r['at_s']}s:{r['ms']}" for r in rows)
        print(f"{kind:9} n={len(ms)} p50 {out[kind]['p50_ms']} ms  max {out[kind]['max_ms']} ms  "
              f"(by time: {by_time})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

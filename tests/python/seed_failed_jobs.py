#!/usr/bin/env python3
"""Seed N failed RQ jobs, written by RQ's own code paths (Job.create, FailedJobRegistry.add,
Result.create_failure), exactly as a worker's failure handler leaves them.

Copy of shared/tools/seed_failed_jobs.py kept in the repository so tests and benchmarks run
from a clean clone; the one change: RQ 1.16's Result.create_failure has no worker_name.

usage: seed_failed_jobs.py --url redis://127.0.0.1:6379/0 --count 100000 [--queues default,emails,reports]
"""
import argparse
import inspect
import random
import sys
import time
import traceback

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

try:
    from rq.results import Result
except ImportError:  # RQ < 1.12
    Result = None

FUNCS = [
    ("app.workers.reports.render_report", "ConnectionError", "upstream reporting API timed out after 30s"),
    ("app.workers.emails.send_welcome", "smtplib.SMTPServerDisconnected", "Connection unexpectedly closed"),
    ("app.workers.billing.charge_card", "ValueError", "card number failed Luhn check"),
    ("app.workers.sync.pull_orders", "TimeoutError", "read timed out"),
    ("app.workers.images.resize", "KeyError", "'width'"),
]


def fake_traceback(func, exc_type, message):
    frames = "".join(
        f'  File "/srv/app/{func.replace(".", "/")}.py", line {10 + i * 7}, in step_{i}\n    result = step_{i + 1}(payload)\n'
        for i in range(6)
    )
    return f"Traceback (most recent call last):\n{frames}{exc_type}: {message}\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--queues", default="default,emails,reports")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    result_takes_worker_name = Result is not None and "worker_name" in inspect.signature(Result.create_failure).parameters
    conn = Redis.from_url(args.url)
    queues = [Queue(q, connection=conn) for q in args.queues.split(",")]
    t0 = time.time()
    made = 0
    while made < args.count:
        n = min(args.batch, args.count - made)
        with conn.pipeline() as p:
            for _ in range(n):
                q = rnd.choice(queues)
                func, exc_type, msg = rnd.choice(FUNCS)
                job = Job.create(func, args=(rnd.randint(1, 10**6),), kwargs={"tenant": "acme"},
                                 connection=conn, origin=q.name, meta={"tenant": "acme"},
                                 description=None, timeout=180)
                job.origin = q.name
                job.enqueued_at = job.created_at
                job.started_at = job.created_at
                job.ended_at = job.created_at
                job.worker_name = "seed-worker"
                exc = fake_traceback(func, exc_type, msg)
                job.save(pipeline=p)
                job.set_status(JobStatus.FAILED, pipeline=p)
                FailedJobRegistry(q.name, connection=conn).add(job, ttl=job.failure_ttl, exc_string=exc, pipeline=p)
                if Result is not None:
                    extra = {"worker_name": "seed-worker"} if result_takes_worker_name else {}
                    Result.create_failure(job, job.failure_ttl, exc_string=exc, pipeline=p, **extra)
                p.sadd("rq:queues", q.key)
            p.execute()
        made += n
    print(f"seeded {made} failed jobs in {time.time() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()

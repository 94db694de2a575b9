"""Redis time per job (INFO commandstats) of the reads a first build makes, and of alternatives,
on a server that already holds a seeded snapshot (issue 24, item 3):

    redis-server --port 7777 --dir DIR --dbfilename seed-….rdb --save '' &   # wait for the load
    target/venv-rq2/bin/python bench/read_cost.py 7777 100000

It reads the first N ids of rq:failed:q3 in pipelines of 1,000, each variant twice: HMGET of
the 13 fields `rq::job::FIELDS` names, HGETALL, XREVRANGE of the results stream (COUNT 2 and 1),
and what the daemon sends (HMGET + XREVRANGE COUNT 2). It resets the server's statistics."""
import os
import sys
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import redis_usec_per_job  # noqa: E402

# rq::job::FIELDS, in its order.
FIELDS = ["status", "origin", "description", "data", "ended_at", "exc_info", "retryd_attempts",
          "retryd_policy", "retryd_requeued_at", "retryd_exhausted", "failure_ttl", "created_at", "meta"]
VARIANTS = [
    ("HMGET 13", lambda p, j: p.hmget(f"rq:job:{j}", FIELDS)),
    ("HGETALL", lambda p, j: p.hgetall(f"rq:job:{j}")),
    ("XREVRANGE 2", lambda p, j: p.xrevrange(f"rq:results:{j}", count=2)),
    ("XREVRANGE 1", lambda p, j: p.xrevrange(f"rq:results:{j}", count=1)),
    ("HMGET+XREVRANGE2", lambda p, j: (p.hmget(f"rq:job:{j}", FIELDS),
                                       p.xrevrange(f"rq:results:{j}", count=2))),
]


def run(r, ids, name, add):
    r.config_resetstat()
    t0 = time.time()
    for i in range(0, len(ids), 1000):
        p = r.pipeline(transaction=False)
        for j in ids[i:i + 1000]:
            add(p, j)
        p.execute()
    wall = time.time() - t0
    # INFO's and CONFIG's own time is far under the 0.05 us a job it leaves out.
    per = redis_usec_per_job(r, len(ids))
    print(f"{name:18s} {sum(per.values()):6.2f} us/job of Redis time  wall {wall:5.2f}s  {per}", flush=True)


def main():
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    r = redis.Redis(port=port)
    ids = [i.decode() for i in r.zrange("rq:failed:q3", 0, n - 1)]
    for _round in range(2):
        for name, add in VARIANTS:
            run(r, ids, name, add)


if __name__ == "__main__":
    main()

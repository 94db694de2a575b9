#!/usr/bin/env python3
"""Audit filters over a full stream (issue 22, item 4; target: <= 50 ms at 10,000 entries).

Fills `rq:retryd:audit` of a throwaway redis-server with --entries entries shaped as the write
scripts write them: 9 of 10 the supervisor's (requeue/purge/mark_exhausted of --ids uuid job ids
over 3 queues, one every few seconds over the last 13 hours), 1 of 10 a person's (five token
names, bulk retries with their selection, single deletes, pauses). Then starts `rq-retryd run`
(--binary, default target/release/rq-retryd, else target/debug) on it and times, over real
HTTP from this process, wall clock per request:

  cold        the first GET /api/v1/audit after start (the daemon reads the whole stream once)
  <filter>    --repeat requests of each filter (p50, p99, max), limit 100
  walk        paging through the whole stream with limit=1000 and the cursor (total)
  healthz     the same client's floor: GET /healthz (p50)

and the daemon's RSS before the first request and after (VmRSS, VmHWM). Prints one JSON line.

usage: bench/audit.py [--entries 10000] [--ids 50] [--repeat 50] [--binary PATH]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Server, free_port, REPO)

KEY = "rq:retryd:audit"
PEOPLE = ["ops-alice@10.0.0.5", "ops-bob@10.0.0.6", "oncall@10.0.0.7", "lead@10.0.0.8", "auth_token@127.0.0.1"]
QUEUES = ["emails", "payments", "default"]


def fill(r, entries, n_ids, now_ms):
    """Appends `entries` entries ending about now; returns the id of one person's job deep in it."""
    rnd = random.Random(22)
    step = 13 * 3_600_000 // entries
    deep_job = None
    pipe = r.pipeline(transaction=False)
    for i in range(entries):
        ms = now_ms - (entries - i) * step
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + "+00:00"
        queue = rnd.choice(QUEUES)
        if i % 10 == 5:
            who = rnd.choice(PEOPLE)
            kind = rnd.choice(["bulk", "delete", "pause"])
            if kind == "pause":
                fields = {"action": "pause", "why": "api: INC-1234", "queue": "", "ids": []}
            elif kind == "delete":
                fields = {"action": "purge", "why": "DELETE /api/v1/failed-jobs/{job_id}", "queue": queue,
                          "ids": [str(uuid.uuid4())]}
            else:
                fields = {"action": "requeue", "queue": queue,
                          "why": f"POST /api/v1/jobs/failed/retry-all?queue={queue}&exception=TimeoutError&failed_after=1h",
                          "ids": [str(uuid.uuid4()) for _ in range(rnd.randint(1, n_ids))]}
            if i < entries // 10 and fields["ids"]:
                deep_job = fields["ids"][0]
        else:
            who = "supervisor"
            action = rnd.choice(["requeue", "requeue", "requeue", "purge", "mark_exhausted"])
            fields = {"action": action, "why": f"{queue}-policy", "queue": queue,
                      "ids": [str(uuid.uuid4()) for _ in range(n_ids)]}
        ids = fields.pop("ids")
        pipe.xadd(KEY, {"at": at, "who": who, **fields, "count": len(ids), "job_ids": ",".join(ids),
                        "job_ids_json": json.dumps(ids)}, id=f"{ms}-0")
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()
    return deep_job


def get(port, query, path="/api/v1/audit"):
    url = f"http://127.0.0.1:{port}{path}?{query}"
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = json.loads(response.read())
    return (time.perf_counter() - start) * 1000, body


def rss_kib(pid):
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name = line.split(":")[0]
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(line.split()[1])
    return found


def percentile(values, p):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))], 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--ids", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--binary")
    args = ap.parse_args()
    binary = args.binary or next(
        p for p in (os.path.join(bench.REPO, "target", b, "rq-retryd") for b in ("release", "debug")) if os.path.exists(p))
    with tempfile.TemporaryDirectory() as work:
        server = bench.Server(work)
        server.start()
        daemon = None
        try:
            r = server.client()
            now_ms = int(time.time() * 1000)
            deep_job = fill(r, args.entries, args.ids, now_ms)
            port = bench.free_port()
            cfg = os.path.join(work, "config.toml")
            with open(cfg, "w") as f:
                f.write(f'[redis]\nurl = "{server.url}"\n[supervisor]\nscan_interval = "1h"\n'
                        f'[http]\nlisten = "127.0.0.1:{port}"\n[logging]\nlevel = "warn"\n'
                        '[[policy]]\nname = "hands-off"\naction = "ignore"\n')
            log = open(os.path.join(work, "daemon.log"), "w")
            daemon = subprocess.Popen([binary, "--config", cfg, "run"], stdout=log, stderr=log)
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise SystemExit("rq-retryd did not become ready")
                    time.sleep(0.1)
            result = {"entries": r.xlen(KEY), "ids_per_supervisor_entry": args.ids, "binary": binary,
                      "stream_bytes": r.memory_usage(KEY, samples=0), "rss_before_kib": rss_kib(daemon.pid)}
            cold, body = get(port, "limit=100")
            result["cold_ms"] = round(cold, 1)
            result["stream_len"] = body["stream_len"]
            result["rss_after_kib"] = rss_kib(daemon.pid)
            filters = {
                "newest": "limit=100",
                "people_only": "people_only=true",
                "who": "who=alice",
                "action_pause": "action=pause",
                "queue": "queue=payments",
                "job_id_deep": f"job_id={deep_job}",
                "job_id_absent": "job_id=no-such-job",
                "since_1h": "since=1h",
                "range_people": "since=12h&until=11h&people_only=true",
                "all_filters": "who=bob&action=requeue&queue=emails&since=1d&people_only=true",
            }
            # The floor on this machine: a request that does nothing (GET /healthz).
            floor = sorted(get(port, "", "/healthz")[0] for _ in range(args.repeat))
            result["healthz_p50_ms"] = percentile(floor, 50)
            timings = {}
            for name, query in filters.items():
                times = []
                for _ in range(args.repeat):
                    ms, body = get(port, query)
                    times.append(ms)
                timings[name] = {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
                                 "max_ms": round(max(times), 2), "entries": len(body["entries"]),
                                 "searched": body["searched"]}
            result["filters"] = timings
            assert timings["job_id_deep"]["entries"] == 1, timings["job_id_deep"]
            start = time.perf_counter()
            cursor, pages, seen = "", 0, 0
            while True:
                _, body = get(port, f"limit=1000{cursor}")
                pages += 1
                seen += len(body["entries"])
                if not body["next_cursor"]:
                    break
                cursor = f"&cursor={body['next_cursor']}"
            result["walk"] = {"pages": pages, "entries": seen, "total_ms": round((time.perf_counter() - start) * 1000, 1)}
            assert seen == result["entries"], (seen, result["entries"])
            print(json.dumps(result))
        finally:
            if daemon:
                daemon.terminate()
                daemon.wait(timeout=30)
            server.stop()


if __name__ == "__main__":
    main()

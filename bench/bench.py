#!/usr/bin/env python3
"""Bulk-requeue benchmark: rq-retryd vs RQ's own `rq requeue --all` vs the raw Redis ceiling.

Seeds N failed jobs through RQ's own code (tests/python/seed_failed_jobs.py) into a throwaway
redis-server, snapshots it once (RDB), and restores the snapshot before each contender, so all
three work on byte-identical data in the same run:

  rq        `rq requeue --all --queue Q` for every queue (RQ 2.12, one job per round trips)
  retryd    `rq-retryd once` with a retry-everything-now policy (logging at info to a file)
  ceiling   the minimal Redis commands per job (HMGET job fields + XREVRANGE newest result +
            ZREM + HSET + HDEL + PERSIST + RPUSH) sent by `redis-cli --pipe`

Each contender is checked afterwards: every job in its queue list exactly once, none left in a
failed registry. During the rq-retryd run SLOWLOG records anything slower than 10 ms.

Steady state (--steady 20000,200000): N failed jobs all waiting in backoff under a running
daemon; reports the duration of a re-scan that finds nothing due (after the first scan) and the
daemon's peak RSS (VmHWM).

usage: bench/run.sh [--count 100000] [--skip-rq] [--steady 20000,200000] [--json out.json]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = ["status", "origin", "description", "data", "ended_at", "exc_info", "retryd_attempts",
          "retryd_policy", "retryd_requeued_at", "retryd_exhausted"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A redis-server in its own directory, restartable from a snapshot."""

    def __init__(self, workdir):
        self.dir = workdir
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def client(self):
        return redis.Redis(port=self.port)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self):
        if self.proc:
            try:
                self.client().shutdown(nosave=True)
            except redis.exceptions.RedisError:
                pass
            self.proc.wait(timeout=30)
            self.proc = None

    def snapshot(self, path):
        self.client().save()
        shutil.copy(os.path.join(self.dir, "dump.rdb"), path)

    def restore(self, path):
        self.stop()
        shutil.copy(path, os.path.join(self.dir, "dump.rdb"))
        self.start()


def check_all_requeued(r, queues, count):
    queued = []
    for q in queues:
        queued += r.lrange(f"rq:queue:{q}", 0, -1)
        left = r.zcard(f"rq:failed:{q}")
        if left:
            raise SystemExit(f"{left} jobs still in rq:failed:{q}")
    if len(queued) != count or len(set(queued)) != count:
        raise SystemExit(f"expected {count} distinct queued ids, got {len(queued)} ({len(set(queued))} distinct)")


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def ceiling_commands(r, queues, path):
    """The minimal per-job command stream, written once before timing."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    with open(path, "wb") as f:
        for q in queues:
            for job_id in r.zrange(f"rq:failed:{q}", 0, -1):
                key = b"rq:job:" + job_id
                f.write(resp(b"HMGET", key, *FIELDS))
                f.write(resp(b"XREVRANGE", b"rq:results:" + job_id, b"+", b"-", b"COUNT", b"1"))
                f.write(resp(b"ZREM", f"rq:failed:{q}", job_id))
                f.write(resp(b"HSET", key, b"status", b"queued", b"enqueued_at", now, b"started_at", b"",
                             b"ended_at", b"", b"retryd_requeued_at", now, b"retryd_attempts", b"1"))
                f.write(resp(b"HDEL", key, b"exc_info"))
                f.write(resp(b"PERSIST", key))
                f.write(resp(b"RPUSH", f"rq:queue:{q}", job_id))


def http(port, method, path):
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def scan_and_wait(port):
    """Asks for a scan and waits for it to finish; returns its report."""
    before = (http(port, "GET", "/api/v1/supervisor").get("last_scan") or {}).get("finished_at")
    http(port, "POST", "/api/v1/supervisor/scan")
    deadline = time.time() + 600
    while time.time() < deadline:
        last = http(port, "GET", "/api/v1/supervisor").get("last_scan")
        if last and last["finished_at"] != before:
            return last["report"]
        time.sleep(0.05)
    raise SystemExit("scan did not finish")


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def steady(args, count, work):
    """N jobs waiting in backoff: cost of a re-scan that finds nothing due, and peak RSS."""
    server = Server(os.path.join(work, f"redis-steady-{count}"))
    os.makedirs(server.dir)
    server.start()
    daemon = None
    try:
        subprocess.run([os.path.join(args.venv, "bin", "python"), os.path.join(REPO, "tests", "python", "seed_failed_jobs.py"),
                        "--url", server.url, "--count", str(count), "--queues", args.queues], stderr=subprocess.DEVNULL, check=True)
        port = free_port()
        cfg = os.path.join(work, f"steady-{count}.toml")
        with open(cfg, "w") as f:
            f.write(f'[redis]\nurl = "{server.url}"\n[supervisor]\nscan_interval = "1h"\n[http]\nlisten = "127.0.0.1:{port}"\n'
                    '[[policy]]\nname = "wait-an-hour"\nmax_attempts = 3\nbackoff = { strategy = "fixed", delay = "1h" }\n')
        daemon = subprocess.Popen([args.binary, "--config", cfg, "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        first = None
        while time.time() < deadline:
            try:
                last = http(port, "GET", "/api/v1/supervisor").get("last_scan")
                if last:
                    first = last["report"]
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if not first or first["waiting"] != count:
            raise SystemExit(f"first scan did not see {count} waiting jobs: {first}")
        r = server.client()
        r.config_resetstat()
        rescans = [scan_and_wait(port) for _ in range(3)]
        xrevrange = int(r.info("commandstats").get("cmdstat_xrevrange", {}).get("calls", 0))
        rescan_ms = sorted(x["duration_ms"] for x in rescans)[1]
        rss = peak_rss_kib(daemon.pid)
        print(f"steady   {count:>7} waiting: first scan {first['duration_ms']} ms, re-scan {rescan_ms} ms (median of 3), "
              f"tracebacks re-read {xrevrange}, peak RSS {rss / 1024:.1f} MiB", flush=True)
        return {"count": count, "first_scan_ms": first["duration_ms"], "rescan_ms": rescan_ms,
                "tracebacks_reread": xrevrange, "peak_rss_mib": rss / 1024}
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait(timeout=30)
        server.stop()


def timed(cmd, **kw):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, **kw)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}")
    return elapsed, proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--queues", default="default,emails,reports")
    ap.add_argument("--skip-rq", action="store_true", help="skip RQ's own requeue (slow: ~400 jobs/s)")
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "rq-retryd"))
    ap.add_argument("--venv", default=os.path.join(REPO, "target", "venv-rq2"))
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--steady", default="", help="comma-separated job counts for the steady-state run (e.g. 20000,200000)")
    ap.add_argument("--skip-bulk", action="store_true", help="only the steady-state run")
    args = ap.parse_args()
    queues = args.queues.split(",")
    work = tempfile.mkdtemp(prefix="rq-retryd-bench-")
    server = Server(os.path.join(work, "redis"))
    os.makedirs(server.dir)
    results = {"count": args.count, "queues": queues}
    try:
        if args.steady:
            results["steady"] = [steady(args, int(n), work) for n in args.steady.split(",")]
            if len(results["steady"]) >= 2:
                lo, hi = results["steady"][0], results["steady"][-1]
                print(f"peak RSS {hi['count']} / {lo['count']} = {hi['peak_rss_mib'] / lo['peak_rss_mib']:.2f} (target <= 2, and < 200 MiB)")
        if args.skip_bulk:
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=2)
            return
        server.start()
        print(f"seeding {args.count} failed jobs over {len(queues)} queues with RQ's own code ...", flush=True)
        t, _ = timed([os.path.join(args.venv, "bin", "python"), os.path.join(REPO, "tests", "python", "seed_failed_jobs.py"),
                      "--url", server.url, "--count", str(args.count), "--queues", args.queues], stderr=subprocess.DEVNULL)
        print(f"  seeded in {t:.1f}s", flush=True)
        snap = os.path.join(work, "snapshot.rdb")
        server.snapshot(snap)

        # Raw Redis ceiling.
        server.restore(snap)
        cmds = os.path.join(work, "ceiling.resp")
        ceiling_commands(server.client(), queues, cmds)
        with open(cmds, "rb") as f:
            t, _ = timed(["redis-cli", "-p", str(server.port), "--pipe"], stdin=f, stdout=subprocess.DEVNULL)
        check_all_requeued(server.client(), queues, args.count)
        results["ceiling"] = {"seconds": t, "jobs_per_second": args.count / t}
        print(f"ceiling  {args.count / t:>10.0f} jobs/s  ({t:.2f}s)", flush=True)

        # rq-retryd.
        server.restore(snap)
        r = server.client()
        r.config_set("slowlog-log-slower-than", 10_000)
        r.slowlog_reset()
        r.config_set("latency-monitor-threshold", 10)
        cfg = os.path.join(work, "retryd.toml")
        with open(cfg, "w") as f:
            f.write(f'[redis]\nurl = "{server.url}"\n[supervisor]\nbatch_size = 1000\nmax_requeues_per_second = 1000000\n'
                    '[[policy]]\nname = "retry-everything-now"\nmax_attempts = 1\n'
                    'backoff = { strategy = "fixed", delay = "0s" }\n')
        log = os.path.join(work, "retryd.log")
        with open(log, "w") as logf:
            t, proc = timed([args.binary, "--config", cfg, "once", "--json"], stdout=subprocess.PIPE, stderr=logf, env={**os.environ, "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "")})
        summary = json.loads(proc.stdout)
        if summary["requeued"] != args.count:
            raise SystemExit(f"rq-retryd requeued {summary['requeued']} of {args.count}")
        check_all_requeued(r, queues, args.count)
        slow = r.slowlog_get(128)
        latency = r.execute_command("LATENCY", "LATEST")
        results["retryd"] = {"seconds": t, "jobs_per_second": args.count / t,
                             "slowlog_over_10ms": len(slow), "latency_events": [list(map(str, e)) for e in latency]}
        print(f"retryd   {args.count / t:>10.0f} jobs/s  ({t:.2f}s; commands over 10 ms: {len(slow)})", flush=True)

        # RQ's own requeue.
        if not args.skip_rq:
            server.restore(snap)
            rq = os.path.join(args.venv, "bin", "rq")
            total = 0.0
            for q in queues:
                t, _ = timed([rq, "requeue", "--all", "--queue", q, "-u", server.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                total += t
            check_all_requeued(server.client(), queues, args.count)
            results["rq"] = {"seconds": total, "jobs_per_second": args.count / total}
            print(f"rq       {args.count / total:>10.0f} jobs/s  ({total:.2f}s)", flush=True)

        c = results["ceiling"]["jobs_per_second"]
        d = results["retryd"]["jobs_per_second"]
        print(f"\nrq-retryd / ceiling = {d / c:.2f}   (target >= 0.5)")
        if "rq" in results:
            print(f"rq-retryd / rq      = {d / results['rq']['jobs_per_second']:.1f}x (target >= 50x)")
        results["ratios"] = {"retryd_vs_ceiling": d / c, "retryd_vs_rq": (d / results["rq"]["jobs_per_second"]) if "rq" in results else None}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

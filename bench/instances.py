#!/usr/bin/env python3
"""Redis load of several rq-retryd instances in steady state: commands per scan interval with
1 instance, with 3 instances (leader election on: one active, two standbys), and with 3
instances and leader election off (every instance scans), on the same seeded data.

N failed jobs are seeded through RQ's own code (tests/python/seed_failed_jobs.py) and all wait
in a 30-day backoff (the seeded snapshot is reused, and its jobs' failure times age with it: an
hour's backoff let them all fall due an hour after seeding), so a scan finds nothing due: what
remains is the steady cost of keeping up (re-scans, heartbeats, health pings). For each setup
the snapshot is restored, the instances are started and the first scan waited for; then INFO
commandstats is reset, the instances run for --intervals scan intervals, and the commands Redis
processed are counted (total and by command).
Each setup runs --repeat times; the medians count.

usage: target/venv-rq2/bin/python bench/instances.py [--count 100000] [--interval 5] [--intervals 6] [--repeat 3]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import REPO, SEEDED_EXCEPTIONS_TOML, Server, free_port, http  # noqa: E402


def start_daemons(args, server, work, n, leader_election):
    daemons = []
    for i in range(n):
        port = free_port()
        cfg = os.path.join(work, f"instance-{i}.toml")
        with open(cfg, "w") as f:
            f.write(f'[redis]\nurl = "{server.url}"\n[supervisor]\nscan_interval = "{args.interval}s"\n'
                    f'leader_election = {"true" if leader_election else "false"}\n'
                    f'[http]\nlisten = "127.0.0.1:{port}"\n[logging]\nlevel = "warn"\n'
                    '[[policy]]\nname = "wait-a-month"\nmax_attempts = 3\nbackoff = { strategy = "fixed", delay = "30d" }\n'
                    + SEEDED_EXCEPTIONS_TOML)
        proc = subprocess.Popen([args.binary, "--config", cfg, "run"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        daemons.append((proc, port))
    return daemons


def wait_first_scans(daemons, leader_election, count):
    """Until the scanning instances (the active one, or all) finished a full first scan, and
    every instance's index is built (standbys build theirs with an observing pass)."""
    deadline = time.time() + 600
    while time.time() < deadline:
        states = []
        for _, port in daemons:
            try:
                states.append(http(port, "GET", "/api/v1/supervisor"))
            except OSError:
                states.append(None)
        if all(states):
            scanning = [s for s in states if s["active"]] if leader_election else states
            if (len(scanning) == (1 if leader_election else len(states))
                    and all(s["last_scan"] and s["last_scan"]["report"]["waiting"] == count for s in scanning)
                    # and every standby's first observing pass (its index) is done too
                    and all(s.get("index_as_of") for s in states)):
                return
        time.sleep(0.2)
    raise SystemExit("the first scans did not finish")


def measure(args, server, snap, work, n, leader_election):
    server.restore(snap)
    daemons = start_daemons(args, server, work, n, leader_election)
    try:
        wait_first_scans(daemons, leader_election, args.count)
        r = server.client()
        r.config_resetstat()
        time.sleep(args.interval * args.intervals)
        stats = r.info("commandstats")
        by_cmd = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        # INFO is the bench's own read.
        by_cmd.pop("info", None)
        total = sum(by_cmd.values())
        return total / args.intervals, by_cmd
    finally:
        for proc, _ in daemons:
            proc.terminate()
        for proc, _ in daemons:
            proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--queues", default="default,emails,reports")
    ap.add_argument("--interval", type=float, default=5.0, help="scan_interval in seconds")
    ap.add_argument("--intervals", type=int, default=6, help="scan intervals measured per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "rq-retryd"))
    ap.add_argument("--venv", default=os.path.join(REPO, "target", "venv-rq2"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rq-retryd-instances-")
    server = Server(os.path.join(work, "redis"))
    os.makedirs(server.dir)
    snap = os.path.join(work, "snapshot.rdb")
    cached = os.path.join(REPO, "target", "bench", f"seed-{args.count}-{args.queues.replace(',', '-')}-venv-rq2.rdb")
    if os.path.exists(cached):
        print(f"reusing the seeded snapshot {cached}", flush=True)
        import shutil
        shutil.copy(cached, snap)
        server.start()
    else:
        server.start()
        print(f"seeding {args.count} failed jobs through RQ ...", flush=True)
        subprocess.run([os.path.join(args.venv, "bin", "python"), os.path.join(REPO, "tests", "python", "seed_failed_jobs.py"),
                        "--url", server.url, "--count", str(args.count), "--queues", args.queues],
                       stderr=subprocess.DEVNULL, check=True)
        server.snapshot(snap)
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        import shutil
        shutil.copy(snap, cached)
    setups = [("1 instance", 1, True), ("3 instances, lease", 3, True), ("3 instances, no lease", 3, False)]
    results = {}
    try:
        for name, n, lease in setups:
            runs = []
            for _ in range(args.repeat):
                per_interval, by_cmd = measure(args, server, snap, work, n, lease)
                runs.append((per_interval, by_cmd))
                print(f"{name:<24} {per_interval:8.1f} commands per {args.interval:g} s interval  "
                      + " ".join(f"{k}={v}" for k, v in sorted(by_cmd.items(), key=lambda kv: -kv[1])[:6]), flush=True)
            results[name] = statistics.median(r[0] for r in runs)
    finally:
        server.stop()
    one = results["1 instance"]
    print(f"\n{args.count} waiting failed jobs, scan_interval {args.interval:g} s, median of {args.repeat}:")
    for name, v in results.items():
        print(f"  {name:<24} {v:8.1f} commands/interval  ({v / one:.2f} x one instance)")
    print(f"target: 3 instances with the lease <= 1.3 x one instance: "
          f"{'met' if results['3 instances, lease'] <= 1.3 * one else 'NOT met'}")


if __name__ == "__main__":
    main()

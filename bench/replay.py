#!/usr/bin/env python3
"""Controlled replays (issue 22, item 6), measured: a paced bulk retry of N real RQ failures
with its own rate, a cancel sent to a second instance, and a task whose instance is killed
(kill -9) read from the second instance.

Starts its own redis-server (a free port) and two `rq-retryd run` (the binary given), seeds the
failures with tests/python/seed_failed_jobs.py (RQ's own code paths), and prints one JSON line.

usage: bench/replay.py --binary target/debug/rq-retryd --python VENV/bin/python [--jobs 50000] [--rate 2000] [--only-replay]
(--rate 0: no rate, the global limit alone, as a baseline)
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    began = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    return status, json.loads(body or b"null"), time.monotonic() - began


def daemon(binary, redis_url, port, limit, dir):
    config = os.path.join(dir, f"rq-retryd-{port}.toml")
    with open(config, "w") as f:
        f.write(f'[redis]\nurl = "{redis_url}"\n[supervisor]\nscan_interval = "1h"\nmax_requeues_per_second = {limit}\n'
                f'[http]\nlisten = "127.0.0.1:{port}"\n[logging]\nlevel = "warn"\n'
                '[[policy]]\nname = "hands-off"\naction = "ignore"\n')
    log = open(os.path.join(dir, f"rq-retryd-{port}.log"), "w")
    p = subprocess.Popen([binary, "--config", config, "run"], stdout=log, stderr=log)
    for _ in range(600):
        try:
            if call(port, "GET", "/readyz")[0] == 200:
                return p
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"rq-retryd on {port} not ready")


def wait_state(port, task, pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = call(port, "GET", f"/api/v1/tasks/{task}")[1]
        if pred(t):
            return t
        time.sleep(0.05)
    sys.exit(f"task {task} did not get there: {t}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--jobs", type=int, default=50000)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--only-replay", action="store_true", help="stop after the whole replay")
    a = ap.parse_args()
    dir = tempfile.mkdtemp(prefix="replay-bench-")
    rport = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    url = f"redis://127.0.0.1:{rport}/0"
    out = {"jobs": a.jobs, "rate": a.rate}
    try:
        t0 = time.monotonic()
        subprocess.run([a.python, os.path.join(ROOT, "tests/python/seed_failed_jobs.py"), "--url", url,
                        "--count", str(a.jobs), "--queues", "replay"], check=True, stdout=subprocess.DEVNULL)
        out["seed_s"] = round(time.monotonic() - t0, 1)
        limit = a.rate * 2 if a.rate else 100000
        pace = f"&rate={a.rate}" if a.rate else ""
        ports = [free_port(), free_port()]
        owner = daemon(a.binary, url, ports[0], limit, dir)
        other = daemon(a.binary, url, ports[1], limit, dir)
        time.sleep(2)
        # 1. the whole replay at `rate`: how long, and the rate achieved
        status, t, _ = call(ports[0], "POST", f"/api/v1/jobs/failed/retry-all?queue=replay{pace}&reason=bench&wait_ms=0")
        began = time.monotonic()
        task = t["task_id"]
        gets = []
        while True:
            s, t, took = call(ports[1], "GET", f"/api/v1/tasks/{task}")
            gets.append(took)
            if t["state"] != "running":
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - began
        out["replay"] = {"state": t["state"], "requeued": t["requeued_count"], "total": t["total"],
                         "seconds": round(elapsed, 2), "achieved_per_s": round(t["requeued_count"] / elapsed, 1),
                         "expected_min_s": round((a.jobs - a.rate) / a.rate, 2) if a.rate else 0,
                         "get_from_other_instance_ms_p50": round(sorted(gets)[len(gets) // 2] * 1000, 1),
                         "get_ms_max": round(max(gets) * 1000, 1)}
        if a.only_replay:
            owner.terminate()
            other.terminate()
            print(json.dumps(out))
            return
        # 2. put them back (RQ's own failure path again) and cancel from the other instance
        subprocess.run(["redis-cli", "-p", str(rport), "FLUSHDB"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([a.python, os.path.join(ROOT, "tests/python/seed_failed_jobs.py"), "--url", url,
                        "--count", str(a.jobs), "--queues", "replay", "--seed", "8"], check=True, stdout=subprocess.DEVNULL)
        call(ports[0], "POST", "/api/v1/supervisor/scan")
        time.sleep(3)
        task = call(ports[0], "POST", f"/api/v1/jobs/failed/retry-all?queue=replay&rate={a.rate}&wait_ms=0")[1]["task_id"]
        wait_state(ports[1], task, lambda t: t["done"] >= a.rate * 2, 60)
        s, t, took = call(ports[1], "DELETE", f"/api/v1/tasks/{task}")
        asked = time.monotonic()
        final = wait_state(ports[1], task, lambda t: t["state"] != "running", 30)
        time.sleep(1.5)
        queued = int(subprocess.check_output(["redis-cli", "-p", str(rport), "LLEN", "rq:queue:replay"]))
        failed = int(subprocess.check_output(["redis-cli", "-p", str(rport), "ZCARD", "rq:failed:replay"]))
        out["cancel_from_other_instance"] = {"status": s, "answer_ms": round(took * 1000), "state": final["state"],
                                             "requeued": final["requeued_count"], "queued": queued, "failed": failed,
                                             "none_lost": queued + failed == a.jobs}
        # 3. kill -9 the owner mid-task; how long until the other instance says interrupted
        task = call(ports[0], "POST", f"/api/v1/jobs/failed/retry-all?queue=replay&rate={a.rate}&wait_ms=0")[1]["task_id"]
        wait_state(ports[1], task, lambda t: t["done"] >= a.rate * 2, 60)
        owner.kill()
        killed = time.monotonic()
        final = wait_state(ports[1], task, lambda t: t["state"] != "running", 30)
        queued2 = int(subprocess.check_output(["redis-cli", "-p", str(rport), "LLEN", "rq:queue:replay"]))
        out["killed_owner"] = {"state": final["state"], "read_as_interrupted_after_s": round(time.monotonic() - killed, 2),
                               "counted": final["requeued_count"], "queued_by_it": queued2 - queued}
        other.terminate()
    finally:
        redis.terminate()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Soak (issue 11, part 5): the release daemon against real `rq worker` processes for a while.

Starts its own redis-server on a free port (AOF on, keyspace notifications `Kz`, which is what
src/supervisor/notifications.rs listens for), `rq-retryd run` with a config of its own, a few
real `rq worker` processes (restarted if one exits) and a producer that enqueues through RQ's own
`Queue.enqueue` at a steady rate. The jobs (bench/soak_jobs.py) are of three kinds:

  ok       always succeed                            -> finished
  flaky    fail 1-3 times (ConnectionError), then    -> finished after that many requeues
           succeed (the tally lives in Redis, so a requeue onto any worker sees it)
  doomed   always fail (ValueError)                  -> failed, marked retryd_exhausted

At about half time the daemon gets a SIGHUP with a changed config (log level and backoffs); at
about 60% Redis is shut down (AOF fsynced) and started again on the same port; the daemon must
reconnect by itself. Every minute one line: daemon RSS, Redis commands/s, requeues/s, jobs so far.

At the end the producer stops, workers and daemon drain, and every token enqueued is checked:
in exactly one place, in the state its kind leads to (finished / exhausted / still waiting for a
retry due later), executed once more than rq-retryd requeued it, never successfully twice, and
no job of the soak in no queue and no registry; the daemon's requeued_total equals the requeues
the jobs record; RSS growth from minute 2 to the last minute under --rss-limit. Exit 1 when any
check fails (the work directory with every log is then kept).

usage: target/venv-rq2/bin/python bench/soak.py [--minutes 20] [--rate 20] [--workers 3]
       (needs `cargo build --release` and `./scripts/test.sh --setup-only`)
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import REPO, Server, free_port, http  # noqa: E402

QUEUE = "soak"
FUNC = "soak_jobs.run"
# Attempts of the two policies the jobs are built for: a flaky job fails at most
# FLAKY_MAX_FAILS times, under TRANSIENT_MAX, so it always ends finished; a doomed job is
# requeued DOOMED_MAX times and then marked exhausted.
TRANSIENT_MAX = 5
FLAKY_MAX_FAILS = 3
DOOMED_MAX = 2


def config_toml(redis_url, http_port, scan_interval, reloaded, on_exhausted="keep"):
    """The daemon's config; the reloaded one changes the log level and both backoffs (not the
    attempts, so the end check's expectations hold for jobs on either side of the reload)."""
    level = "rq_retryd=info,warn" if reloaded else "info"
    transient = "2s" if reloaded else "1s"
    initial = "2s" if reloaded else "1s"
    return f"""# written by bench/soak.py ({'after' if reloaded else 'before'} the SIGHUP reload)
[redis]
url = "{redis_url}"
[supervisor]
scan_interval = "{scan_interval}"
queues = ["{QUEUE}"]
max_requeues_per_second = 500
[http]
listen = "127.0.0.1:{http_port}"
[logging]
level = "{level}"

[[policy]]
name = "transient"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = {TRANSIENT_MAX}
backoff = {{ strategy = "fixed", delay = "{transient}" }}

[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "retry"
max_attempts = {DOOMED_MAX}
backoff = {{ strategy = "exponential", initial = "{initial}", multiplier = 2.0, max = "10s", jitter = 0.1 }}
on_exhausted = "{on_exhausted}"
# These jobs fail on every retry by design: the breaker would (rightly) hold them back for its
# cool-down over and over, and the backlog would grow all run. The transient policy keeps the
# default breaker, which its jobs (about half the retries fail again) never open.
circuit_breaker = false

# Anything else (an AbandonedJobError from RQ's own cleanup, say): retried a few times, then kept.
[[policy]]
name = "anything-else"
action = "retry"
max_attempts = 3
backoff = {{ strategy = "fixed", delay = "2s" }}
on_exhausted = "{on_exhausted}"
"""


class SoakRedis(Server):
    """bench.Server with persistence and notifications, restartable on the same port."""

    def start(self):
        self.log = open(os.path.join(self.dir, "redis.log"), "a")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--notify-keyspace-events", "Kz"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.05)
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def client(self):
        return redis.Redis(port=self.port, socket_timeout=10, socket_connect_timeout=5)

    def shutdown(self):
        """SHUTDOWN: Redis flushes and fsyncs the AOF, so what it acknowledged survives."""
        # redis-cli, not redis-py: redis-py retries the lost connection with backoff and
        # returns seconds after Redis has gone.
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        self.proc.wait(timeout=60)
        self.proc = None


def get_text(port, path, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def metric_sum(text, name, **labels):
    """Sum of a metric's samples whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Workers:
    """N real `rq worker` processes, each restarted when it exits (as systemd would)."""

    def __init__(self, args, url, work):
        self.args, self.url, self.work = args, url, work
        self.procs = [None] * args.workers
        self.restarts = 0
        self.stopping = False

    def spawn(self, i):
        log = open(os.path.join(self.work, f"worker-{i}.log"), "a")
        cmd = [os.path.join(self.args.venv, "bin", "rq"), "worker", "-u", self.url,
               "--path", os.path.join(REPO, "bench"),
               # RQ's own recovery of jobs a worker dropped when Redis went away (abandoned in
               # rq:wip, stuck in the intermediate queue) runs in the maintenance between two
               # dequeues: a 20 s dequeue timeout (worker ttl - 15) lets it run while idle too,
               # and the 10 s monitoring interval makes a dropped job expire 70 s after its start.
               "--maintenance-interval", "30", "--worker-ttl", "35", "--job-monitoring-interval", "10",
               "--disable-job-desc-logging", "--logging_level", self.args.worker_log_level]
        if self.args.worker_class:
            cmd += ["--worker-class", self.args.worker_class]
        self.procs[i] = subprocess.Popen(cmd + [QUEUE], stdout=log, stderr=subprocess.STDOUT)

    def start(self):
        for i in range(len(self.procs)):
            self.spawn(i)

    def check(self):
        """Restarts any worker that exited; returns how many it restarted."""
        n = 0
        for i, p in enumerate(self.procs):
            if not self.stopping and p.poll() is not None:
                log(f"worker {i} exited with {p.returncode}; restarting it")
                self.spawn(i)
                self.restarts += 1
                n += 1
        return n

    def stop(self):
        self.stopping = True
        for p in self.procs:
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)  # warm shutdown: finish the job in hand
        for p in self.procs:
            if p:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class Producer(threading.Thread):
    """Enqueues through RQ's own Queue.enqueue at a steady rate; a job is counted only once it is
    known to be in Redis (an enqueue cut by the Redis restart is checked and retried)."""

    def __init__(self, args, server, mix):
        super().__init__(daemon=True)
        self.args, self.server, self.mix = args, server, mix
        self.tokens = {}  # token -> (kind, fails)
        self.enqueued_at = {}  # token -> when the producer enqueued it (unix seconds)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.errors = 0
        self.skipped_ticks = 0
        self.rnd = random.Random(args.seed)

    def pick(self):
        x = self.rnd.random() * sum(w for _, w in self.mix)
        for kind, w in self.mix:
            x -= w
            if x < 0:
                break
        return kind, (self.rnd.randint(1, FLAKY_MAX_FAILS) if kind == "flaky" else 0)

    def enqueue(self, q, r, token, kind, fails):
        job_id = f"soak-{token}"
        retried = False
        while not self.stop_event.is_set():
            try:
                if retried and r.exists(f"rq:job:{job_id}"):
                    return True  # the cut-off enqueue went through
                q.enqueue(FUNC, args=(token, kind, fails), job_id=job_id, result_ttl=-1,
                          failure_ttl=7 * 86400, job_timeout=60, description=f"soak {kind} {token}")
                return True
            except redis.exceptions.RedisError:
                self.errors += 1
                retried = True
                time.sleep(0.5)
        return False

    def run(self):
        from rq import Queue
        r = self.server.client()
        q = Queue(QUEUE, connection=r)
        interval = 1.0 / self.args.rate
        due = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now < due:
                time.sleep(min(due - now, 0.2))
                continue
            if now - due > 1.0:  # fell behind (Redis was down): resume the rate, do not burst
                self.skipped_ticks += int((now - due) / interval)
                due = now
            token = uuid.uuid4().hex[:16]
            kind, fails = self.pick()
            at = time.time()
            if self.enqueue(q, r, token, kind, fails):
                with self.lock:
                    self.tokens[token] = (kind, fails)
                    self.enqueued_at[token] = at
            due += interval

    def count(self):
        with self.lock:
            return len(self.tokens)


T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


class Soak:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="rq-retryd-soak-")
        self.server = SoakRedis(os.path.join(self.work, "redis"))
        os.makedirs(self.server.dir)
        self.http_port = free_port()
        self.cfg = os.path.join(self.work, "retryd.toml")
        self.daemon = None
        self.daemon_log = os.path.join(self.work, "retryd.log")
        self.failures = []
        self.samples = []
        self.events = {}

    # ---- processes -------------------------------------------------------------------------

    def write_config(self, reloaded):
        with open(self.cfg, "w") as f:
            f.write(config_toml(self.server.url, self.http_port, self.args.scan_interval, reloaded,
                                "purge" if self.args.purge_exhausted else "keep"))

    def start_daemon(self):
        self.write_config(reloaded=False)
        check = subprocess.run([self.args.binary, "--config", self.cfg, "check-config"], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"check-config refused the soak's config:\n{check.stderr}")
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.daemon = subprocess.Popen([self.args.binary, "--config", self.cfg, "run"],
                                       stdout=open(self.daemon_log, "a"), stderr=subprocess.STDOUT, env=env)
        self.wait_ready(30, "the daemon did not become ready")

    def wait_ready(self, timeout, message):
        """Waits for /readyz 200 (the daemon reaches Redis); returns the seconds it took."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            self.daemon_alive()
            try:
                if get_text(self.http_port, "/readyz", timeout=2)[0] == 200:
                    return time.time() - t0
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.1)
        self.fail(message)
        return None

    def daemon_alive(self):
        if self.daemon.poll() is not None and "daemon_died" not in self.events:
            self.events["daemon_died"] = time.time() - T0
            self.fail(f"the daemon exited with {self.daemon.returncode}; log tail:\n{tail(self.daemon_log)}")
        return self.daemon.poll() is None

    def fail(self, msg):
        log(f"CHECK FAILED: {msg}")
        self.failures.append(msg)

    # ---- the disturbances ------------------------------------------------------------------

    def reload(self):
        before = http(self.http_port, "GET", "/api/v1/policies")
        self.events["rss_before_reload_mib"] = round(rss_kib(self.daemon.pid) / 1024, 1)
        self.reload_time = time.time()
        self.write_config(reloaded=True)
        self.daemon.send_signal(signal.SIGHUP)
        t0 = time.time()
        while time.time() - t0 < 10:
            after = http(self.http_port, "GET", "/api/v1/policies")
            if after != before:
                log(f"SIGHUP reload applied in {time.time() - t0:.2f}s (policies now {summarise_policies(after)})")
                self.events["reload_applied_s"] = round(time.time() - t0, 3)
                return
            time.sleep(0.05)
        self.fail("the SIGHUP reload was not applied within 10 s (GET /api/v1/policies unchanged)")

    def restart_redis(self):
        down = self.args.redis_down
        log(f"Redis restart: SHUTDOWN (AOF), {down:.0f}s down, start again on port {self.server.port}")
        requeued_before = self.requeued_total()
        self.events["rss_before_restart_mib"] = round(rss_kib(self.daemon.pid) / 1024, 1)
        t0 = time.time()
        self.server.shutdown()
        stopped = time.time() - t0
        time.sleep(down)
        self.server.start()
        up = time.time() - t0
        self.events["redis_shutdown_s"] = round(stopped, 2)
        ready = self.wait_ready(60, "the daemon did not reconnect within 60 s of Redis returning")
        if ready is not None:
            log(f"Redis back after {up:.1f}s (SHUTDOWN took {stopped:.1f}s); daemon /readyz 200 again {ready:.2f}s later")
            self.events["redis_down_s"] = round(up, 2)
            self.events["daemon_ready_after_s"] = round(ready, 3)
        self.restart_window = (t0, t0 + up)
        self.events["redis_restart_at_s"] = round(t0 - T0, 1)
        self.events["redis_back_at_s"] = round(t0 + up - T0, 1)
        self.requeued_at_restart = requeued_before

    # ---- measuring -------------------------------------------------------------------------

    def metrics(self):
        try:
            return get_text(self.http_port, "/metrics")[1]
        except OSError:
            return ""

    def requeued_total(self, text=None):
        return metric_sum(text if text is not None else self.metrics(), "rq_retryd_requeued_total", trigger="auto")

    def sample(self, minute, prev):
        r = self.server.client()
        now = time.time()
        text = self.metrics()
        try:
            stats = r.info("stats")
            with r.pipeline() as p:
                for k in ("soak:n:exec", "soak:n:success", "soak:n:fail"):
                    p.get(k)
                p.zcard(f"rq:finished:{QUEUE}")
                p.zcard(f"rq:failed:{QUEUE}")
                p.llen(f"rq:queue:{QUEUE}")
                execs, succ, fails, finished, failed, queued = p.execute()
            cmds = stats["total_commands_processed"]
        except redis.exceptions.RedisError as e:
            log(f"minute {minute}: Redis unreachable ({e})")
            return prev
        s = {"minute": minute, "t": round(now - T0, 1), "rss_kib": rss_kib(self.daemon.pid), "commands": cmds,
             "requeued": self.requeued_total(text), "enqueued": self.producer.count(),
             "executions": int(execs or 0), "successes": int(succ or 0), "job_failures": int(fails or 0),
             "finished": finished, "failed_now": failed, "queued_now": queued,
             "exhausted_now": int(metric_sum(text, "rq_retryd_exhausted_jobs", queue=QUEUE)),
             "worker_restarts": self.workers.restarts}
        if prev:
            dt = now - prev["_time"]
            # total_commands_processed starts from 0 when Redis restarts: count from there.
            d_cmds = cmds - prev["commands"] if cmds >= prev["commands"] else cmds
            s["commands_per_s"] = round(d_cmds / dt)
            s["requeues_per_s"] = round((s["requeued"] - prev["requeued"]) / dt, 1)
            note = " (Redis restarted in this minute)" if cmds < prev["commands"] else ""
            log(f"minute {minute:>3}: daemon RSS {s['rss_kib'] / 1024:6.1f} MiB | Redis {s['commands_per_s']:>6} cmd/s{note} | "
                f"requeues {s['requeues_per_s']:5.1f}/s | enqueued {s['enqueued']}, ran {s['executions']} "
                f"(ok {s['successes']}, failed {s['job_failures']}) | finished {finished}, failed now {failed} "
                f"(exhausted {s['exhausted_now']}), queued {queued} | worker restarts {s['worker_restarts']}")
            self.samples.append(s)
        s["_time"] = now
        return s

    # ---- the run ---------------------------------------------------------------------------

    def run(self):
        a = self.args
        duration = a.minutes * 60
        log(f"work directory {self.work}; Redis on port {self.server.port}, daemon HTTP on {self.http_port}; "
            f"{a.minutes} min at {a.rate} jobs/s, {a.workers} workers, mix {a.mix}")
        self.server.start()
        self.start_daemon()
        self.workers = Workers(a, self.server.url, self.work)
        self.workers.start()
        self.producer = Producer(a, self.server, parse_mix(a.mix))
        start = time.time()
        self.producer.start()
        prev = self.sample(0, None)
        reload_at, restart_at = start + a.reload_at * duration, start + a.restart_at * duration
        reloaded = restarted = False
        minute = 1
        while time.time() - start < duration:
            time.sleep(0.25)
            self.workers.check()
            if not self.daemon_alive():
                break
            if not reloaded and time.time() >= reload_at:
                reloaded = True
                self.reload()
            if not restarted and time.time() >= restart_at:
                restarted = True
                self.restart_redis()
            if reloaded and "rss_30s_after_reload_mib" not in self.events and time.time() > self.reload_time + 30:
                self.events["rss_30s_after_reload_mib"] = round(rss_kib(self.daemon.pid) / 1024, 1)
                log(f"daemon RSS {self.events['rss_before_reload_mib']} MiB just before the SIGHUP reload, "
                    f"{self.events['rss_30s_after_reload_mib']} MiB 30 s after it")
            if restarted and "rss_30s_after_restart_mib" not in self.events and time.time() > self.restart_window[1] + 30:
                # A step in RSS at the reconnect is told apart from a steady growth this way.
                self.events["rss_30s_after_restart_mib"] = round(rss_kib(self.daemon.pid) / 1024, 1)
                log(f"daemon RSS {self.events['rss_before_restart_mib']} MiB just before the Redis restart, "
                    f"{self.events['rss_30s_after_restart_mib']} MiB 30 s after it")
            if time.time() - start >= minute * a.report_every:
                prev = self.sample(minute, prev)
                minute += 1
        self.producer.stop_event.set()
        self.producer.join(timeout=30)
        log(f"producer stopped: {self.producer.count()} jobs enqueued ({self.producer.errors} enqueue errors retried, "
            f"{self.producer.skipped_ticks} ticks skipped while Redis was away)")
        if self.daemon_alive():
            if self.samples and time.time() - prev["_time"] > a.report_every / 2:
                prev = self.sample(minute, prev)  # the last partial minute, if it is not tiny
            self.drain()
        self.workers.stop()
        if a.inject_faults:
            self.inject_faults()
        self.check()
        self.stop_daemon()

    def stop_daemon(self):
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                code = self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.fail("the daemon did not exit within 30 s of SIGTERM")
                return
            if code != 0:
                self.fail(f"the daemon exited with {code} on SIGTERM")

    # ---- draining and the end check ------------------------------------------------------

    def locations(self, r, tokens):
        """For each token: every place its job is, the job's fields and its tally."""
        def members(cmd, key):
            return [m.decode() for m in cmd(key, 0, -1)]
        queue = members(r.lrange, f"rq:queue:{QUEUE}")
        inter = members(r.lrange, f"rq:queue:{QUEUE}:intermediate")
        wip = [m.split(":", 1)[0] for m in members(r.zrange, f"rq:wip:{QUEUE}")]
        places = {}
        for where, ids in (("queue", queue), ("intermediate", inter), ("started", wip)):
            for job_id in ids:
                places.setdefault(job_id, []).append(where)
        for reg in ("finished", "failed", "deferred", "scheduled", "canceled"):
            for job_id in members(r.zrange, f"rq:{reg}:{QUEUE}"):
                places.setdefault(job_id, []).append(reg)
        out = {}
        tokens = list(tokens)
        for i in range(0, len(tokens), 1000):
            chunk = tokens[i:i + 1000]
            with r.pipeline(transaction=False) as p:
                for t in chunk:
                    p.hmget(f"rq:job:soak-{t}", "status", "retryd_attempts", "retryd_exhausted", "ended_at",
                            "created_at")
                    p.hgetall(f"soak:t:{t}")
                res = p.execute()
            for j, t in enumerate(chunk):
                status, attempts, exhausted, ended_at, created_at = res[2 * j]
                tally = {k.decode(): v.decode() for k, v in res[2 * j + 1].items()}
                out[t] = {"places": places.get(f"soak-{t}", []), "hash": status is not None,
                          "status": status.decode() if status else None, "attempts": int(attempts or 0),
                          "exhausted": exhausted == b"1", "ended_at": (ended_at or b"").decode(),
                          "created_at": parse_time(created_at.decode()) if created_at else None,
                          "exec": int(tally.get("exec", 0)),
                          "success": int(tally.get("success", 0)),
                          "first_ok_at": float(tally["first_ok_at"]) if "first_ok_at" in tally else None,
                          "exec_at": sorted(float(v) for k, v in tally.items() if k.startswith("exec") and k.endswith("_at"))}
        return out, places

    def next_retry(self, token):
        """rq-retryd's next retry time for a failed job (None when it has none or cannot say)."""
        try:
            e = http(self.http_port, "GET", f"/api/v1/jobs/failed/soak-{token}/explain")
        except (OSError, urllib.error.HTTPError):
            return None
        return e.get("next_retry_at")

    def drain(self):
        """Waits until nothing is queued or running and every failed job is exhausted, or is one
        rq-retryd will never act on (no ended_at: the end check reports it), or until
        --drain-timeout. Reads only the queue and the registries, every 2 s."""
        a = self.args
        r = self.server.client()
        t0 = time.time()
        log(f"draining (up to {a.drain_timeout:.0f}s): waiting for every job to be finished or exhausted ...")
        last_print = 0
        while True:
            self.workers.check()
            try:
                with r.pipeline(transaction=False) as p:
                    p.llen(f"rq:queue:{QUEUE}")
                    p.llen(f"rq:queue:{QUEUE}:intermediate")
                    p.zcard(f"rq:wip:{QUEUE}")
                    p.zrange(f"rq:failed:{QUEUE}", 0, -1)
                    queued, inter, running, failed = p.execute()
                with r.pipeline(transaction=False) as p:
                    for job_id in failed:
                        p.hmget(b"rq:job:" + job_id, "retryd_exhausted", "ended_at")
                    marks = p.execute()
            except redis.exceptions.RedisError as e:
                log(f"  draining: Redis unreachable ({e})")
                time.sleep(2)
                continue
            busy = queued + inter + running
            pending = [j for j, (ex, _) in zip(failed, marks) if ex != b"1"]
            # A failed job without a failure time is one rq-retryd skips as undecodable; it
            # never moves, so waiting for it is pointless (the end check reports it).
            stuck = [j for j, (ex, ended) in zip(failed, marks) if ex != b"1" and not ended]
            waiting = len(pending) - len(stuck)
            if not busy and not waiting:
                left = f" ({len(stuck)} failed jobs without ended_at that rq-retryd skips)" if stuck else ""
                log(f"drained in {time.time() - t0:.1f}s: nothing queued, running or waiting{left}")
                break
            if time.time() - t0 > a.drain_timeout:
                log(f"drain timeout: {busy} queued or running, {waiting} failed and not exhausted")
                break
            if time.time() - last_print > 10:
                log(f"  draining: {busy} queued or running, {waiting} failed and waiting for a retry")
                last_print = time.time()
            if not self.daemon_alive():
                break
            time.sleep(2)
        self.events["drain_s"] = round(time.time() - t0, 1)

    def inject_faults(self):
        """--inject-faults: breaks three jobs the way a bug would, so a run shows the end check
        catches each (the run must then fail with exactly these three)."""
        r = self.server.client()
        finished = [m.decode() for m in r.zrange(f"rq:finished:{QUEUE}", 0, 2)]
        exhausted = [m.decode() for m in r.zrange(f"rq:failed:{QUEUE}", 0, -1)
                     if r.hget(b"rq:job:" + m, "retryd_exhausted") == b"1"][:1]
        if len(finished) < 2 or not exhausted:
            self.fail("--inject-faults: not enough finished and exhausted jobs to break")
            return
        r.zrem(f"rq:finished:{QUEUE}", finished[0])  # lost: in no registry
        r.zadd(f"rq:finished:{QUEUE}", {exhausted[0]: time.time()})  # in two places
        r.hincrby(f"soak:t:{finished[1][len('soak-'):]}", "success", 1)  # succeeded twice
        log(f"injected faults: {finished[0]} lost, {exhausted[0]} in two places, {finished[1]} succeeded twice")

    def check(self):
        r = self.server.client()
        tokens = dict(self.producer.tokens)
        enqueued_at = dict(self.producer.enqueued_at)
        locs, places = self.locations(r, tokens)
        now = time.time()
        states = {"finished": [], "exhausted": [], "waiting": [], "purged": []}
        purge = self.args.purge_exhausted
        problems = {}

        notes = {}
        window = getattr(self, "restart_window", None)

        def touched_by_restart(l):
            """Ran, or was enqueued, while Redis went away or just before. A worker that lost
            Redis mid-job drops the job; RQ recovers it as abandoned, so it runs once more than
            its kind needs. A worker that lost Redis right after dequeuing leaves the id in RQ
            2.x's intermediate queue as well: RQ fails it as abandoned (rq-retryd retries it, it
            finishes), and later its intermediate-queue cleanup finds the stale id and fails the
            finished job once more ("Job was stuck in intermediate queue."), so it runs again."""
            if window is None:
                return False
            near = lambda x: x is not None and window[0] - 5 <= x <= window[1] + 5
            return near(l.get("created_at")) or near(l.get("enqueued_at")) or any(near(x) for x in l["exec_at"])

        def problem(kind, token, detail):
            if kind.startswith("!") or not touched_by_restart(detail):
                problems.setdefault(kind.lstrip("!"), []).append((token, detail))
            else:
                notes.setdefault(kind, []).append((token, detail))

        for t, l in locs.items():
            kind, fails = tokens[t]
            l["enqueued_at"] = enqueued_at.get(t)
            where = l["places"]
            if not l["hash"] and not where:
                # --purge-exhausted: a doomed job is deleted once its attempts are used up; its
                # tally (outside the job) still says it ran once more than it was requeued.
                if purge and kind == "doomed" and l["success"] == 0:
                    if l["exec"] != DOOMED_MAX + 1:
                        # A dequeue the Redis restart lost never ran the job function: RQ failed
                        # it as abandoned and rq-retryd counted that as one of its attempts.
                        problem(f"purged after {l['exec']} runs for {DOOMED_MAX} requeues", t, l)
                    states["purged"].append(t)
                    continue
                problem("!lost (no job hash, in no queue or registry)", t, l)
                continue
            if not where:
                problem("!lost (in no queue and no registry)", t, l)
                continue
            if len(where) > 1:
                problem("!in more than one place (or twice in one)", t, l)
                continue
            place = where[0]
            if place == "finished" and l["status"] == "finished":
                state = "finished"
            elif place == "failed" and l["status"] == "failed" and l["exhausted"]:
                state = "exhausted"
            # A job RQ failed without ended_at (a worker died holding it) is retried like any
            # other since 5341562 (dated by its failed-registry score): no case of its own.
            elif place == "failed" and l["status"] == "failed":
                due = self.next_retry(t)
                if due and parse_time(due) > now:
                    state = "waiting"
                else:
                    problem("!failed, not exhausted and no retry in the future (stuck)", t, {**l, "next_retry_at": due})
                    continue
            else:
                problem("!" + f"not drained ({place}, status {l['status']})", t, l)
                continue
            states[state].append(t)
            if l["success"] > 1:
                problem("succeeded more than once", t, l)
            if (state == "finished" and l["success"] == 0) or (state != "finished" and l["success"] > 0):
                problem(f"{state} with {l['success']} successes", t, l)
            # Each execution after the first follows one automatic requeue by rq-retryd.
            if state != "waiting" and l["exec"] != l["attempts"] + 1:
                problem("executions != rq-retryd requeues + 1", t, l)
            expected = ("purged" if purge else "exhausted") if kind == "doomed" else "finished"
            if state != "waiting" and state != expected:
                problem(f"{kind} job ended {state} (expected {expected})", t, l)
            if kind == "flaky" and state == "finished" and l["attempts"] != fails:
                problem(f"flaky job (fails {fails}) finished after {l['attempts']} requeues", t, l)
            if kind == "doomed" and state == "exhausted" and l["attempts"] != DOOMED_MAX:
                problem(f"doomed job exhausted after {l['attempts']} requeues (max_attempts {DOOMED_MAX})", t, l)

        # Jobs of the soak that the producer never counted (an enqueue it gave up on) or strays.
        known = {f"soak-{t}" for t in tokens}
        extra = [k.decode()[len("rq:job:"):] for k in r.scan_iter("rq:job:soak-*", count=1000)
                 if not k.decode().endswith((":dependents", ":dependencies"))]
        extra = [j for j in extra if j not in known] + [j for j in places if j.startswith("soak-") and j not in known]
        for j in sorted(set(extra)):
            problem("!a soak job the producer did not count", j[len("soak-"):], {"places": places.get(j, [])})

        requeued = self.requeued_total()
        # A purged job's hash (with its retryd_attempts) is gone: it was requeued DOOMED_MAX times.
        attempts = sum(l["attempts"] for l in locs.values()) + DOOMED_MAX * len(states["purged"])
        total = len(tokens)
        accounted = sum(len(v) for v in states.values())
        print()
        print(f"end check over {total} tokens: finished {len(states['finished'])}, exhausted {len(states['exhausted'])}, "
              f"purged {len(states['purged'])}, "
              f"waiting {len(states['waiting'])} ({accounted} accounted for, {total - accounted} not)")
        by_kind = {}
        for t, (kind, _) in tokens.items():
            by_kind[kind] = by_kind.get(kind, 0) + 1
        print(f"  enqueued by kind: {by_kind}; executions {sum(l['exec'] for l in locs.values())}, "
              f"rq-retryd requeues recorded on the jobs {attempts}, daemon requeued_total {requeued:.0f}")
        if total == 0:
            self.fail("no job was enqueued")
        for kind, items in notes.items():
            sample = "; ".join(f"{t}: {d}" for t, d in items[:3])
            print(f"  note: {len(items)} jobs {kind}, each of them run within 5 s of the Redis restart "
                  f"(RQ's at-least-once: a worker that lost Redis dropped the job, RQ recovered it as abandoned "
                  f"and rq-retryd retried it): {sample}")
        for kind, items in problems.items():
            sample = "; ".join(f"{t}: {d}" for t, d in items[:5])
            self.fail(f"{len(items)} jobs {kind}: {sample}")
        if "redis_back_at_s" in self.events and requeued <= getattr(self, "requeued_at_restart", requeued):
            self.fail("the daemon requeued nothing after the Redis restart")
        if requeued != attempts:
            self.fail(f"the daemon's requeued_total{{trigger=auto}} is {requeued:.0f} but the jobs record {attempts} requeues")

        # RSS: minute 2 (the first minute after warm-up) against the last minute.
        if self.samples:
            base = next((s for s in self.samples if s["minute"] == 2), self.samples[0])
            last = self.samples[-1]
            growth = (last["rss_kib"] - base["rss_kib"]) / base["rss_kib"] * 100
            print(f"  daemon RSS: minute {base['minute']} {base['rss_kib'] / 1024:.1f} MiB, minute {last['minute']} "
                  f"{last['rss_kib'] / 1024:.1f} MiB: growth {growth:+.1f}% (limit {self.args.rss_limit:.0f}%)")
            self.events["rss"] = {"base_minute": base["minute"], "base_mib": round(base["rss_kib"] / 1024, 1),
                                  "last_minute": last["minute"], "last_mib": round(last["rss_kib"] / 1024, 1),
                                  "growth_pct": round(growth, 1)}
            if growth >= self.args.rss_limit:
                self.fail(f"daemon RSS grew {growth:.1f}% from minute {base['minute']} to minute {last['minute']}")
        rates = [s["requeues_per_s"] for s in self.samples]
        cmds = [s["commands_per_s"] for s in self.samples]
        if rates:
            print(f"  requeues/s per minute: min {min(rates)}, max {max(rates)}; Redis cmd/s: min {min(cmds)}, max {max(cmds)}")
        self.result = {"tokens": total, "states": {k: len(v) for k, v in states.items()}, "by_kind": by_kind,
                       "requeued_total": requeued, "requeues_on_jobs": attempts, "problems": {k: len(v) for k, v in problems.items()},
                       "notes": {k: len(v) for k, v in notes.items()},
                       "events": self.events, "samples": [{k: v for k, v in s.items() if k != "_time"} for s in self.samples]}

    def cleanup(self, keep):
        for stop in (lambda: self.producer.stop_event.set() if hasattr(self, "producer") else None,
                     lambda: self.workers.stop() if hasattr(self, "workers") else None,
                     lambda: self.daemon and self.daemon.poll() is None and (self.daemon.terminate(), self.daemon.wait(30)),
                     lambda: self.server.proc and self.server.stop()):
            try:
                stop()
            except Exception as e:  # cleanup goes on
                log(f"cleanup: {e}")
        if keep:
            log(f"kept the work directory with every log: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def parse_time(s):
    import datetime
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def summarise_policies(p):
    return ", ".join(f"{x.get('name')}: {json.dumps(x.get('backoff'))}" for x in p.get("policies", []))


def parse_mix(s):
    mix = []
    for part in s.split(","):
        kind, _, w = part.partition("=")
        if kind not in ("ok", "flaky", "doomed"):
            raise SystemExit(f"--mix: unknown kind {kind!r} (ok, flaky, doomed)")
        mix.append((kind, float(w)))
    return mix


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--rate", type=float, default=20, help="jobs enqueued per second")
    ap.add_argument("--mix", default="ok=50,flaky=30,doomed=20", help="relative weights of the job kinds")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--worker-class", default="", help="e.g. rq.worker.SimpleWorker (no fork per job); default RQ's Worker")
    ap.add_argument("--worker-log-level", default="WARNING")
    ap.add_argument("--scan-interval", default="2s")
    ap.add_argument("--reload-at", type=float, default=0.5, help="SIGHUP reload at this fraction of the run")
    ap.add_argument("--restart-at", type=float, default=0.6, help="Redis restart at this fraction of the run")
    ap.add_argument("--redis-down", type=float, default=3, help="seconds Redis stays down")
    ap.add_argument("--report-every", type=float, default=60, help="seconds between report lines")
    ap.add_argument("--drain-timeout", type=float, default=300,
                    help="seconds to wait after the producer stops (RQ needs up to ~2 min to recover a job a worker dropped)")
    ap.add_argument("--purge-exhausted", action="store_true",
                    help="the policies purge what they exhausted (on_exhausted = purge), so the failed registry "
                         "stays bounded and RSS growth from minute 2 on is not the data's")
    ap.add_argument("--rss-limit", type=float, default=10, help="largest RSS growth in %% from minute 2 to the last")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "rq-retryd"))
    ap.add_argument("--venv", default=os.path.join(REPO, "target", "venv-rq2"))
    ap.add_argument("--json", help="write the samples, events and check results here")
    ap.add_argument("--inject-faults", action="store_true",
                    help="break three jobs before the end check (lost, in two places, succeeded twice) to see it fail")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, AOF) even when every check passes")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        raise SystemExit(f"{args.binary} not found: run `cargo build --release` first")
    soak = Soak(args)
    try:
        soak.run()
    except KeyboardInterrupt:
        soak.fail("interrupted")
    finally:
        soak.cleanup(keep=args.keep or bool(soak.failures))
    if args.json and hasattr(soak, "result"):
        with open(args.json, "w") as f:
            json.dump({**soak.result, "failures": soak.failures, "args": vars(args)}, f, indent=2)
    if soak.failures:
        print(f"\nFAILED: {len(soak.failures)} checks failed")
        for f in soak.failures:
            print(f"  - {f[:2000]}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

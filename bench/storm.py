#!/usr/bin/env python3
"""A failure storm, live (issue 24, item 2): failures arriving at incident rates against a
running daemon, while a reader polls the listing, `groups` and `stats`.

For each rate (failures per second, all queues together) a fresh redis-server (keyspace
notifications on) and a fresh `rq-retryd run` with a mix of policies:

  storm-N  ConnectionError  60 %  retry, fixed backoff 5 s (max_attempts 3; no worker runs the
                                  requeued jobs, so each is requeued once and stays queued)
           KeyError         20 %  purge 10 s after the failure
           ValueError       20 %  ignore
  probe    ValueError       20/s  ignore: the probes that time the index
  react    ConnectionError  ~1/s  retry at once: the probes that time the notified reaction

Producers (several processes) write the failures the way RQ's worker leaves them. Each kind of
failure is first written by RQ's own code (Job.create, Job.save, set_status, FailedJobRegistry.add,
Result.create_failure) into a pipeline that is captured, not sent; a producer then replays that
exact command list with a new job id and the current time in place of the template's (so a job
costs what RQ's failure handler costs Redis, and Python keeps up with 10,000/s). The end check
reads jobs back with RQ's own code (Job.fetch, latest_result, FailedJobRegistry).

Measured per rate:
  index lag      probe written -> counted by GET /api/v1/jobs/failed?queue=probe (polled every 20 ms)
  due->requeued  a sample of retry jobs: backoff due time -> status `queued` (polled every 20 ms);
                 also split by whether the job fell due during the storm or after it
  reaction       a `react` failure written about once a second -> status `queued` (polled every
                 10 ms): the notified reaction (issue 24, item 4), during the storm and, as the
                 baseline, the same probe before the storm starts (no other failures arriving)
  API p50/p99    the reader's listing, groups and stats calls
  commands per failure  Redis INFO commandstats over the run, minus what the producers, the
                 samplers and INFO itself sent (they count their own), per failure produced
  daemon CPU per 1,000 failures; peak RSS (VmHWM)
and at the end (after the last backoff and purge are due): every retry job is in its queue list
exactly once, every purge job is gone, every ignore job and probe is still in its registry, and
the listing's total for each queue equals ZCARD of its registry (the index agrees with Redis).

usage: bench/run.sh storm [--rates 2000,5000,10000] [--seconds 60] [--queues 6] [--producers 3]
                          [--binary target/release/rq-retryd] [--json out.json]
"""
import argparse
import datetime
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from index_api import cpu_seconds, nearest_rank, status_kib  # noqa: E402

REPO = bench.REPO
BACKOFF_S = 5.0
PURGE_AFTER_S = 10.0
COUNT_WINDOW_S = 3.0  # the readers' commands are counted over this, before and after the storm
# An overloaded daemon (past the rate it keeps up with) is still purging, requeuing and indexing
# when the storm ends: the end check is asked again, once a second, for up to this long (two
# full scans), and the run fails only on what is still wrong then. A job queued twice or a
# hash missing does not heal by waiting, so this hides no loss; how long it took is reported.
SETTLE_S = 65.0
PROBE_EVERY_S = 0.05
REACT_EVERY_S = 1.0  # one reaction probe about every second (jittered), during the storm
REACT_BASELINE = 12  # reaction probes before the storm, the baseline of the same run
KINDS = [  # (kind, exception type, message, share of the storm)
    ("retry", "ConnectionError", "upstream reset the connection", 0.6),
    ("purge", "KeyError", "'width'", 0.2),
    ("ignore", "ValueError", "card number failed Luhn check", 0.2),
]
TEMPLATE_TIME = datetime.datetime(2001, 2, 3, 4, 5, 6, 789012)
TEMPLATE_ID = "0" * 32
FAILURE_TTL_S = 365 * 24 * 3600  # RQ's default failure_ttl: the registry score is failure time + this


def config_toml(redis_url, port):
    return f"""# written by bench/storm.py
[redis]
url = "{redis_url}"
[supervisor]
scan_interval = "30s"
max_requeues_per_second = 1000000
[http]
listen = "127.0.0.1:{port}"
[logging]
level = "warn"

[[policy]]
name = "probes"
queues = ["probe"]
action = "ignore"

[[policy]]
name = "react"
queues = ["react"]
action = "retry"
max_attempts = 3
backoff = {{ strategy = "fixed", delay = "0s" }}
circuit_breaker = false

[[policy]]
name = "transient"
exceptions = ["ConnectionError"]
action = "retry"
max_attempts = 3
backoff = {{ strategy = "fixed", delay = "{BACKOFF_S:g}s" }}
circuit_breaker = false

[[policy]]
name = "bad-data"
exceptions = ["KeyError"]
action = "purge"
purge_after = "{PURGE_AFTER_S:g}s"

[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "ignore"
"""


def rq_time(t):
    """RQ's own timestamp format (rq.utils.utcformat)."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def capture_template(r, queue, exc_type, message):
    """The exact commands RQ's failure handler sends for one failed job, as (args) tuples, with
    the template's id and time in them to be replaced."""
    from rq.job import Job, JobStatus
    from rq.registry import FailedJobRegistry
    from rq.results import Result
    exc = (f"Traceback (most recent call last):\n  File \"/srv/app/workers.py\", line 41, in handle\n"
           f"    return client.fetch(order_id)\n{exc_type}: {message}\n")
    job = Job.create("app.workers.sync.pull_orders", args=(42,), kwargs={"tenant": "acme"},
                     connection=r, origin=queue, id=TEMPLATE_ID, timeout=180)
    job.enqueued_at = job.started_at = job.ended_at = TEMPLATE_TIME
    job.created_at = TEMPLATE_TIME
    job.worker_name = "storm-worker"
    p = r.pipeline(transaction=False)
    job.save(pipeline=p)
    job.set_status(JobStatus.FAILED, pipeline=p)
    FailedJobRegistry(queue, connection=r).add(job, ttl=job.failure_ttl, exc_string=exc, pipeline=p)
    Result.create_failure(job, job.failure_ttl, exc_string=exc, pipeline=p, worker_name="storm-worker")
    p.sadd("rq:queues", f"rq:queue:{queue}")
    commands = [tuple(args) for args, _options in p.command_stack]
    p.reset()
    return commands


def to_bytes(v):
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    return repr(v).encode() if isinstance(v, float) else str(v).encode()


def make_templates(r, queues):
    """{(queue, kind): [command args as bytes]}; the registry score is marked for replacement."""
    templates = {}
    for queue in queues + ["probe", "react"]:
        for kind, exc_type, message, _share in KINDS:
            if (queue == "probe" and kind != "ignore") or (queue == "react" and kind != "retry"):
                continue
            out = []
            for args in capture_template(r, queue, exc_type, message):
                name = args[0].upper() if isinstance(args[0], str) else args[0].decode().upper()
                b = [to_bytes(a) for a in args]
                if name == "ZADD" and b[1].startswith(b"rq:failed:"):
                    b[2] = b"@SCORE@"  # expiry = failure time + failure_ttl, replaced per job
                out.append(b)
            templates[(queue, kind)] = out
    return templates


def render(template, jid, now):
    """One job's commands from its template: the new id and the current time in place of the
    template's."""
    tid = TEMPLATE_ID.encode()
    ttime = rq_time(TEMPLATE_TIME.replace(tzinfo=datetime.timezone.utc).timestamp()).encode()
    ttime_short = TEMPLATE_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    now_iso = rq_time(now).encode()
    now_short = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    out = []
    for args in template:
        row = []
        for a in args:
            if a == b"@SCORE@":
                a = str(int(now) + FAILURE_TTL_S).encode()
            elif tid in a or ttime in a or ttime_short in a:
                a = a.replace(tid, jid).replace(ttime, now_iso).replace(ttime_short, now_short)
            row.append(a)
        out.append(row)
    return out


def write_react(r, templates):
    """Fails one `react` job (retried at once) in its own pipeline; returns (id, written at):
    the time just before the pipeline is sent, so the reaction includes the write itself."""
    jid = uuid.uuid4().hex.encode()
    p = r.pipeline(transaction=False)
    now = time.time()
    for row in render(templates[("react", "retry")], jid, now):
        p.execute_command(*row)
    t = time.time()
    p.execute()
    return jid.decode(), t, len(templates[("react", "retry")])


def produce(index, rate, seconds, queues, templates, url, start_at, samples, result, probes, reacts):
    """One producer process: `rate` failures per second for `seconds`, paced in 10 ms ticks."""
    r = redis.Redis.from_url(url)
    rnd = random.Random(index)
    tid, ttime = TEMPLATE_ID.encode(), rq_time(TEMPLATE_TIME.replace(tzinfo=datetime.timezone.utc).timestamp()).encode()
    # RQ writes the time in a few formats: the ISO form above, and a shorter one without
    # microseconds in some fields; replace both.
    ttime_short = TEMPLATE_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    kinds, weights = [k[0] for k in KINDS], [k[3] for k in KINDS]
    sample_every = max(1, int(rate * seconds * 0.6 / 150))
    made = {k: {q: 0 for q in queues + ["probe"]} for k in kinds}
    commands = 0
    retry_seen = 0
    next_probe = start_at
    probe_seq = 0
    next_react = start_at + rnd.uniform(0.2, 1.0)
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = start_at
    done = 0
    batch_samples = []
    while True:
        now = time.time()
        if now - t0 >= seconds:
            break
        want = int(rate * (now - t0)) - done
        p = r.pipeline(transaction=False)
        now_iso = rq_time(now).encode()
        now_short = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        jobs = []
        for _ in range(max(0, want)):
            kind = rnd.choices(kinds, weights)[0]
            queue = rnd.choice(queues)
            jobs.append((queue, kind))
        probe = index == 0 and now >= next_probe
        if probe:
            jobs.append(("probe", "ignore"))
            next_probe += PROBE_EVERY_S
        for queue, kind in jobs:
            jid = uuid.uuid4().hex.encode()
            for args in templates[(queue, kind)]:
                out = []
                for a in args:
                    if a == b"@SCORE@":
                        a = str(int(now) + FAILURE_TTL_S).encode()
                    elif tid in a or ttime in a or ttime_short in a:
                        a = a.replace(tid, jid).replace(ttime, now_iso).replace(ttime_short, now_short)
                    out.append(a)
                p.execute_command(*out)
                commands += 1
            made[kind][queue] += 1
            if kind == "retry":
                retry_seen += 1
                if retry_seen % sample_every == 0:
                    batch_samples.append((jid.decode(), now))
        if probe:
            probe_seq += 1
        if jobs:
            p.execute()
            if probe:
                probes.put((probe_seq, now))
            done += len(jobs) - (1 if probe else 0)
        if batch_samples:
            samples.put(batch_samples)
            batch_samples = []
        if index == 0 and time.time() >= next_react:
            jid, t, n = write_react(r, templates)
            reacts.put((jid, t))
            commands += n
            made["react"] = made.get("react", 0) + 1
            next_react = t + REACT_EVERY_S * rnd.uniform(0.7, 1.3)
        time.sleep(0.01)
    result.put({"index": index, "made": made, "commands": commands, "seconds": time.time() - t0,
                "ended": time.time()})


def get_json(port, path, timeout=30):
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        body = json.loads(resp.read())
    return time.perf_counter() - t0, body


class Poller(threading.Thread):
    """Calls `fn` every `every` seconds until stopped."""

    def __init__(self, every, fn):
        super().__init__(daemon=True)
        self.every, self.fn, self.stop = every, fn, threading.Event()
        self.error = None

    def run(self):
        while not self.stop.is_set():
            try:
                self.fn()
            except Exception as e:  # noqa: BLE001 -- reported at the end, not swallowed
                self.error = repr(e)
            self.stop.wait(self.every)


def ms(values):
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(nearest_rank(values, 0.5) * 1000, 1),
            "p99_ms": round(nearest_rank(values, 0.99) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


def total_commands(r):
    return sum(v["calls"] for v in r.info("commandstats").values())


def command_calls(r):
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}


def command_usec(r):
    return {k.removeprefix("cmdstat_"): v["usec"] for k, v in r.info("commandstats").items()}


def storm(args, rate, work):
    queues = [f"storm-{i}" for i in range(args.queues)]
    server = bench.Server(os.path.join(work, f"redis-{rate}"))
    os.makedirs(server.dir)
    server.start()
    r = server.client()
    r.config_set("notify-keyspace-events", "Kz")
    templates = make_templates(r, queues)
    port = bench.free_port()
    cfg = os.path.join(work, f"storm-{rate}.toml")
    with open(cfg, "w") as f:
        f.write(config_toml(server.url, port))
    log = open(os.path.join(work, f"storm-{rate}.log"), "ab")
    daemon = subprocess.Popen([args.binary, "--config", cfg, "run"], stdout=log, stderr=log)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if get_json(port, "/api/v1/supervisor")[1].get("last_scan"):
                    break
            except OSError:
                pass
            if time.time() > deadline or daemon.poll() is not None:
                raise SystemExit(f"the daemon did not finish its first scan (log {log.name})")
            time.sleep(0.05)
        return run_storm(args, rate, server, r, daemon, port, queues, templates)
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(timeout=60)
        log.close()
        server.stop()


def run_storm(args, rate, server, r, daemon, port, queues, templates):
    ctx = mp.get_context("fork")
    samples_q, result_q, probes_q, reacts_q = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Queue()
    per = rate / args.producers
    own_commands = [0]  # what the samplers and INFO send, subtracted from Redis's count
    api = {"listing": [], "groups": [], "stats": []}
    api_sources = set()
    probe_totals = []  # (time, total)
    pending, due_lat = [], []  # due_lat: (due at, latency)
    reacting, react_lat = [], []  # (id, written at), (written at, latency)
    sampler_r = server.client()
    react_r = server.client()

    def read():
        for name, path in (("listing", "/api/v1/jobs/failed?limit=50"), ("groups", "/api/v1/jobs/failed/groups"),
                           ("stats", "/api/v1/jobs/stats")):
            dt, body = get_json(port, path)
            api[name].append(dt)
            if name == "listing":
                api_sources.add(body.get("source"))

    def probe_poll():
        _dt, body = get_json(port, "/api/v1/jobs/failed?queue=probe&limit=1")
        probe_totals.append((time.time(), body["total"]))

    def due_poll():
        while not samples_q.empty():
            pending.extend(samples_q.get())
        now = time.time()
        ready = [(j, t) for j, t in pending if t + BACKOFF_S <= now]
        if not ready:
            return
        p = sampler_r.pipeline(transaction=False)
        for j, _t in ready:
            p.hget(f"rq:job:{j}", "status")
        own_commands[0] += len(ready)
        seen = time.time()
        for (j, t), status in zip(ready, p.execute()):
            if status == b"queued":
                due_lat.append((t + BACKOFF_S, seen - (t + BACKOFF_S)))
                pending.remove((j, t))

    full_scans = {}  # started_at -> duration_ms: the full scans (every scan_interval) meanwhile

    def scan_poll():
        last = get_json(port, "/api/v1/supervisor")[1].get("last_scan") or {}
        rep = last.get("report") or {}
        if rep.get("started_at"):
            full_scans[rep["started_at"]] = rep.get("duration_ms")

    def react_poll():
        while not reacts_q.empty():
            reacting.append(reacts_q.get())
        if not reacting:
            return
        p = react_r.pipeline(transaction=False)
        for j, _t in reacting:
            p.hget(f"rq:job:{j}", "status")
        own_commands[0] += len(reacting)
        seen = time.time()
        for (j, t), status in zip(list(reacting), p.execute()):
            if status == b"queued":
                react_lat.append((t, seen - t))
                reacting.remove((j, t))

    pollers = [Poller(0.02, probe_poll), Poller(0.02, due_poll), Poller(0.01, react_poll),
               Poller(0.5, scan_poll)]
    if not args.no_reader:
        pollers.append(Poller(0.1, read))
    for t in pollers:
        t.start()
    # What the daemon sends for the readers alone (no failures arriving), per second: subtracted
    # from the storm's count for the "net" commands per failure.
    quiet_per_s = 0.0
    # The reaction baseline: the same probe with no storm (a failure every ~0.3-0.5 s).
    writer = server.client()
    react_before = 0
    for _ in range(REACT_BASELINE):
        reacts_q.put(write_react(writer, templates)[:2])
        react_before += 1
        time.sleep(random.uniform(0.3, 0.5))
    time.sleep(0.5)
    if COUNT_WINDOW_S:
        time.sleep(0.5)
        q0, q_t0 = total_commands(r), time.time()
        time.sleep(COUNT_WINDOW_S)
        quiet_per_s = (total_commands(r) - q0 - 2) / (time.time() - q_t0)
    cmd0, own_commands[0] = total_commands(r), 1
    calls0 = command_calls(r)
    usec0 = command_usec(r)
    cpu0 = cpu_seconds(daemon.pid)
    redis_cpu0 = bench.redis_cpu_seconds(r)
    storm_t0 = time.time()
    start_at = time.time() + 0.5
    procs = [ctx.Process(target=produce, args=(i, per, args.seconds, queues, templates, server.url, start_at,
                                               samples_q, result_q, probes_q, reacts_q))
             for i in range(args.producers)]
    for p in procs:
        p.start()
    # A process does not exit before what it put on a queue is read: drain while waiting.
    results, probes = [], []
    give_up = time.time() + args.seconds + 120
    while len(results) < len(procs):
        if time.time() > give_up:
            raise SystemExit("a producer did not finish")
        while not probes_q.empty():
            probes.append(probes_q.get())
        while not result_q.empty():
            results.append(result_q.get())
        time.sleep(0.05)
    for p in procs:
        p.join()
    storm_end = max(res["ended"] for res in results)
    # Let the last backoffs and purges fall due.
    time.sleep(PURGE_AFTER_S + 3)
    # The readers' cost again, now that the registries hold what the storm left: a listing
    # page reads its jobs' hashes, so on the empty registries before the storm it cost almost
    # nothing, and the first count ("quiet", before) undercounted the readers by ~6 commands
    # per failure. The larger of the two is subtracted.
    settled_per_s = 0.0
    if COUNT_WINDOW_S:
        settled_cmd, settled_t0 = total_commands(r), time.time()
        time.sleep(COUNT_WINDOW_S)
        settled_per_s = (total_commands(r) - settled_cmd - 2) / (time.time() - settled_t0)
    own_commands[0] += 2
    for t in pollers:
        t.stop.set()
    for t in pollers:
        t.join()
    while not probes_q.empty():
        probes.append(probes_q.get())
    calls1 = command_calls(r)
    usec1 = command_usec(r)
    cmd1 = total_commands(r)
    own_commands[0] += 2
    reader_commands = max(quiet_per_s, settled_per_s) * (time.time() - storm_t0)
    cpu = cpu_seconds(daemon.pid) - cpu0
    redis_cpu = bench.redis_cpu_seconds(r) - redis_cpu0
    made = {k[0]: {q: sum(res["made"][k[0]][q] for res in results) for q in queues + ["probe"]} for k in KINDS}
    failures = sum(sum(v.values()) for v in made.values())
    producer_commands = sum(res["commands"] for res in results)
    seconds = max(res["seconds"] for res in results)
    # Index lag: probe k (written at t_k) is visible at the first poll whose total reached k.
    lag, i = [], 0
    for seq, t in sorted(probes):
        while i < len(probe_totals) and probe_totals[i][1] < seq:
            i += 1
        if i == len(probe_totals):
            break
        lag.append(max(0.0, probe_totals[i][0] - t))
    react_made = react_before + sum(res["made"].get("react", 0) for res in results)
    made["react"] = {"react": react_made}
    check_t0 = time.time()
    check = first_check = end_check(r, port, queues, made)
    while not check["ok"] and time.time() - check_t0 < SETTLE_S:
        time.sleep(1.0)
        check = end_check(r, port, queues, made)
    check["settled_after_s"] = round(time.time() - check_t0, 1)
    if not first_check["ok"]:
        check["first_problems"] = first_check["problems"]
    del made["react"]
    out = {
        "rate_asked": rate, "rate_made": round((failures - made["ignore"]["probe"]) / seconds),
        "seconds": round(seconds, 1), "failures": failures,
        "index_lag": ms(lag), "probes": len(probes),
        "due_to_requeued": ms([d for _t, d in due_lat]),
        "due_to_requeued_due_in_storm": ms([d for t, d in due_lat if storm_t0 <= t < storm_end]),
        "due_to_requeued_due_after": ms([d for t, d in due_lat if t >= storm_end]),
        "due_samples_never_requeued": len(pending),
        "reaction_in_storm": ms([d for t, d in react_lat if storm_t0 <= t < storm_end]),
        "reaction_baseline": ms([d for t, d in react_lat if t < storm_t0]),
        "reaction_never_requeued": len(reacting),
        "api": {k: ms(v) for k, v in api.items()},
        "full_scans_ms": [full_scans[k] for k in sorted(full_scans)], "listing_sources": sorted(s or "?" for s in api_sources),
        "redis_commands_per_failure_daemon": round((cmd1 - cmd0 - producer_commands - own_commands[0]) / failures, 2),
        "redis_commands_per_failure_daemon_net_of_readers":
            round((cmd1 - cmd0 - producer_commands - own_commands[0] - reader_commands) / failures, 2),
        "reader_commands_per_s_quiet": round(quiet_per_s),
        "reader_commands_per_s_settled": round(settled_per_s),
        # Every command Redis ran during the storm, per failure (the producers' HSET, EXPIRE,
        # ZADD, XADD, SADD included): where the daemon's share goes.
        "commands_per_failure_by_name": {k: round((v - calls0.get(k, 0)) / failures, 2)
                                         for k, v in sorted(calls1.items(), key=lambda kv: calls0.get(kv[0], 0) - kv[1])
                                         if v - calls0.get(k, 0) >= failures / 100},
        # Where Redis's time went (INFO commandstats usec; a script's inner commands are counted
        # both under their own names and, in total, under evalsha): the top ten, in seconds.
        "redis_seconds_by_name": dict(sorted(((k, round((v - usec0.get(k, 0)) / 1e6, 2)) for k, v in usec1.items()),
                                             key=lambda kv: -kv[1])[:10]),
        "redis_commands_per_failure_producer": round(producer_commands / failures, 2),
        "daemon_cpu_s_per_1000": round(cpu / failures * 1000, 3), "daemon_cpu_s": round(cpu, 1),
        "redis_cpu_s": round(redis_cpu, 1),
        "daemon_peak_rss_mib": round(status_kib(daemon.pid, "VmHWM") / 1024, 1),
        "poller_errors": [t.error for t in pollers if t.error],
        "check": check,
    }
    return out


def end_check(r, port, queues, made):
    """No job lost or doubled; the index agrees with Redis; RQ reads what was written."""
    from rq.job import Job
    from rq.registry import FailedJobRegistry
    problems = []
    for q in queues:
        ids = r.lrange(f"rq:queue:{q}", 0, -1)
        if len(ids) != len(set(ids)):
            problems.append(f"{q}: {len(ids) - len(set(ids))} job ids queued twice")
        if len(set(ids)) != made["retry"][q]:
            problems.append(f"{q}: {len(set(ids))} queued, {made['retry'][q]} retry failures produced")
    for q in queues + ["probe"]:
        in_registry = r.zcard(f"rq:failed:{q}")
        if in_registry != made["ignore"][q]:
            problems.append(f"{q}: {in_registry} in the failed registry, {made['ignore'][q]} ignore failures produced")
        _dt, body = get_json(port, f"/api/v1/jobs/failed?queue={q}&limit=1")
        if body["total"] != in_registry:
            problems.append(f"{q}: listing total {body['total']} != ZCARD {in_registry}")
    react = made["react"]["react"]
    ids = r.lrange("rq:queue:react", 0, -1)
    if len(ids) != len(set(ids)) or len(set(ids)) != react or r.zcard("rq:failed:react"):
        problems.append(f"react: {len(ids)} queued ({len(set(ids))} distinct), {r.zcard('rq:failed:react')} "
                        f"still failed, {react} produced (each must be queued once)")
    keys = sum(1 for _ in r.scan_iter("rq:job:*", count=10000))
    expected = sum(made["retry"].values()) + sum(made["ignore"].values()) + react
    if keys != expected:
        problems.append(f"{keys} job hashes, {expected} expected (retry + ignore; purge jobs deleted)")
    # RQ's own code reads what was written and what rq-retryd requeued.
    for q in queues[:2]:
        for jid in r.lrange(f"rq:queue:{q}", 0, 4):
            job = Job.fetch(jid.decode(), connection=r)
            if job.get_status() != "queued" or job.origin != q or job.func_name != "app.workers.sync.pull_orders":
                problems.append(f"queued job {jid!r} reads back as {job.get_status()} {job.origin}")
        for jid in FailedJobRegistry(q, connection=r).get_job_ids()[:5]:
            job = Job.fetch(jid, connection=r)
            res = job.latest_result()
            if res is None or res.type != res.Type.FAILED or "ValueError" not in (res.exc_string or ""):
                problems.append(f"failed job {jid} has no failure result RQ can read")
    return {"ok": not problems, "problems": problems[:20]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="2000,5000,10000")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--queues", type=int, default=6)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(REPO, "target", "release", "rq-retryd"))
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--no-reader", action="store_true",
                    help="no listing/groups/stats reader: what the daemon alone costs Redis, by command")
    ap.add_argument("--check-only", action="store_true",
                    help="for correctness (CI), not figures: backoff 2 s and purge_after 4 s instead of 5 s "
                         "and 10 s, and no windows counting the readers' commands (the net figures are then "
                         "not net of the readers)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (the daemon's log of each rate, storm-<rate>.log; "
                         "RUST_LOG=rq_retryd::supervisor::schedule=debug has each pass's timings)")
    args = ap.parse_args()
    if args.check_only:
        global BACKOFF_S, PURGE_AFTER_S, COUNT_WINDOW_S
        BACKOFF_S, PURGE_AFTER_S, COUNT_WINDOW_S = 2.0, 4.0, 0.0
    work = tempfile.mkdtemp(prefix="rq-retryd-storm-")
    out = []
    for rate in [int(x) for x in args.rates.split(",")]:
        res = storm(args, rate, work)
        print(json.dumps(res), flush=True)
        out.append(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    if not all(res["check"]["ok"] for res in out):
        raise SystemExit(f"the end check found lost, doubled or misread jobs (see above; logs in {work})")
    if args.keep:
        print(f"work directory kept: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

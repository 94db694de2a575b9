"""The job functions of the soak (bench/soak.py), imported by real `rq worker --path bench/`.

Each job carries a unique token and keeps its own tally under `soak:t:<token>` (a hash in the
same Redis, outside RQ's `rq:` prefix), so the soak's end check can count how often each job ran
and succeeded whatever RQ or rq-retryd did to it in between:

  exec     executions started (incremented first thing, so a run that fails counts too)
  execN_at unix time execution N started (to tell which jobs ran while Redis was restarting)
  success  executions that returned; more than 1 means a job ran to completion twice
  first_ok_at  unix time of the first success (a second success right after one that fell into
           the Redis restart is RQ's at-least-once: the worker could not record the result)

and `soak:n:exec|success|fail` count all of them, for the soak's per-minute line.

The kind decides the outcome, from the tally alone (no state in the worker process, so a
requeue onto any worker sees the same history):

  ok       always succeeds
  flaky    raises ConnectionError on its first `fails` executions, then succeeds
  doomed   always raises ValueError, so rq-retryd's policy for it ends marked exhausted
"""
import time

from rq import get_current_job


def run(token, kind, fails=0):
    r = get_current_job().connection
    key = f"soak:t:{token}"
    with r.pipeline() as p:
        p.hincrby(key, "exec", 1)
        p.incr("soak:n:exec")
        n = p.execute()[0]
    r.hset(key, f"exec{n}_at", repr(time.time()))
    if kind == "doomed":
        fail(r, ValueError(f"soak job {token}: bad input (always fails)"))
    if kind == "flaky" and n <= int(fails):
        fail(r, ConnectionError(f"soak job {token}: connection reset (execution {n} of {int(fails) + 1})"))
    if kind not in ("ok", "flaky"):
        fail(r, RuntimeError(f"soak job {token}: unknown kind {kind!r}"))
    with r.pipeline() as p:
        p.hincrby(key, "success", 1)
        p.hsetnx(key, "first_ok_at", repr(time.time()))
        p.incr("soak:n:success")
        p.execute()
    return token


def fail(r, exc):
    """Counts the failure (for the soak's per-minute line) and raises it."""
    r.incr("soak:n:fail")
    raise exc

"""Job functions that the interop tests and the demo enqueue on real RQ workers.

Workers import this module as ``tasks`` (``rq worker --path tests/python``), so the
function names RQ stores are ``tasks.fail_first``, ``tasks.always_fail``, ``tasks.hang_first``,
``tasks.missing_key``, ``tasks.kill_own_horse`` and ``tasks.ok``; for ``Greeter().greet``, an
instance method, RQ stores only ``greet`` and pickles the instance.
Works unchanged under RQ 1.16 and RQ 2.x.
"""
import os
import signal
import time

from rq import get_current_job


def fail_first(counter_key, n, value="done"):
    """Fail the first ``n`` runs, then succeed.

    The run count lives in Redis (``counter_key``), not in the process, because every
    run happens in a fresh forked work horse; the worker's own connection is used so
    the job works against whichever throwaway server the test started.
    """
    count = get_current_job().connection.incr(counter_key)
    if count <= n:
        raise ConnectionError(f"upstream timed out (run {count} of {n} failing runs)")
    return value


def always_fail(message="bad input"):
    """A permanent failure: retrying cannot help, so policies purge or exhaust it."""
    raise ValueError(message)


def ok(value="ok"):
    """A job that always succeeds, for queues that must also hold healthy work."""
    return value


def hang_first(counter_key, value="done"):
    """Hang on the first run (the test kills the worker under it), then succeed.

    The first run counts itself in ``counter_key`` before it sleeps, so the test knows the
    job is running in the work horse.
    """
    count = get_current_job().connection.incr(counter_key)
    if count == 1:
        time.sleep(600)
    return value


def missing_key(key="customer_id"):
    """A failure no demo policy matches: left alone, visible in the console."""
    return {}[key]


def kill_own_horse():
    """SIGKILL the process running the job (RQ 1.16 and 2.x fork a work horse per job), as the
    OOM killer would: no exception is raised, so the worker writes its own failure text,
    ``Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ``."""
    os.kill(os.getpid(), signal.SIGKILL)


class Greeter:
    """A class whose bound method is enqueued (``queue.enqueue(Greeter().greet)``): RQ stores
    ``func_name = "greet"`` and the pickled instance, from which rq-retryd reads the class."""

    def __init__(self, greeting="hello"):
        self.greeting = greeting

    def greet(self, name="world"):
        raise ValueError(f"cannot say {self.greeting} to {name}")


def chained_fail(order="42"):
    """Raise while handling another exception that came from library code (the standard
    library's json): a chained traceback whose final line is ``ValueError: order 42:
    card_declined``, with library frames before it. The job page leads with that final line."""
    import json

    try:
        json.loads("{not json")
    except ValueError as e:
        raise ValueError(f"order {order}: card_declined (gateway said no)") from e

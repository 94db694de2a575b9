#!/usr/bin/env python3
"""A small CLI over RQ's own Python API, for the Rust integration tests and the demo.

The tests shell out to ``<venv>/bin/python tests/python/rqctl.py ...`` so that every
enqueue, fetch and requeue goes through real RQ code (1.16 or 2.x, whichever venv runs
it) rather than through a re-implementation of RQ's Redis layout. Every command prints
one line on stdout: a job id, or one JSON object. ``rqctl.py --serve`` runs the same commands
one per line of stdin (see ``serve``), so the tests start Python once, not once per call.

    rqctl.py --url URL enqueue --queue Q --func tasks.fail_first [--args JSON] [--kwargs JSON]
             [--meta JSON] [--timeout N] [--result-ttl N] [--failure-ttl N] [--job-id ID]
             [--depends-on JOB_ID] [--in-seconds N] [--serializer json] [--method]
    rqctl.py --url URL fetch JOB_ID          {"id", "status", "origin", "func_name", ...}
    rqctl.py --url URL failed --queue Q      {"count": N, "ids": [...]}
    rqctl.py --url URL requeue --queue Q JOB_ID   {"id", "status"}
    rqctl.py --url URL queue --queue Q       {"count": N, "ids": [...]}
    rqctl.py --url URL abandon --queue Q     {"failed": [...]}  (StartedJobRegistry.cleanup)
    rqctl.py --url URL stop JOB_ID           {"stopped": ID}  (send_stop_job_command)
    rqctl.py --url URL leave-started --queue Q JOB_ID   {"started": [...]}
    rqctl.py --url URL registry --queue Q --name finished|started   {"count": N, "ids": [...]}
    rqctl.py --url URL workers --queue Q     {"names": [...]}  (Worker.all(queue=...): live workers)
    rqctl.py --url URL stats                 {"failed_count": N, "queues": {"<q>": {"queued", "started",
                                             "failed", "finished", "deferred", "scheduled"}}}
"""
import argparse
import importlib
import json
import sys
import time
from datetime import timedelta

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)


def iso(value):
    """RQ keeps dates as naive UTC datetimes (or None); print them so that None stays null."""
    return None if value is None else value.isoformat()


def status_of(job):
    """RQ 2.x returns a ``JobStatus`` enum, RQ 1.16 a plain string; print the string."""
    status = job.get_status(refresh=True)
    return getattr(status, "value", status)


def return_value(job):
    """The job's return value: ``return_value()`` exists in both 1.16 and 2.x, but is
    computed from the results stream, so guard against it raising on odd states."""
    try:
        return job.return_value()
    except Exception as exc:  # noqa: BLE001 - diagnostic output only
        return f"<unavailable: {exc!r}>"


def cmd_enqueue(conn, a):
    serializer = JSONSerializer if a.serializer == "json" else None
    queue = Queue(a.queue, connection=conn, serializer=serializer)
    if a.method:
        # module.Class.method: that method of a new instance, as `queue.enqueue(obj.method)`.
        module, cls, method = a.func.rsplit(".", 2)
        a.func = getattr(getattr(importlib.import_module(module), cls)(), method)
    if a.in_seconds is not None:
        # Scheduled: lands in the queue's ScheduledJobRegistry until a scheduler moves it.
        job = queue.enqueue_in(
            timedelta(seconds=a.in_seconds),
            a.func,
            args=json.loads(a.args),
            kwargs=json.loads(a.kwargs),
            job_id=a.job_id,
        )
        print(job.id)
        return
    if a.group is not None:
        # RQ 2.x only: the job joins group rq:group:<name> (and names it in group_id).
        from rq.group import Group

        data = Queue.prepare_data(
            a.func,
            args=json.loads(a.args),
            kwargs=json.loads(a.kwargs),
            timeout=a.timeout,
            result_ttl=a.result_ttl,
            failure_ttl=a.failure_ttl,
            job_id=a.job_id,
        )
        (job,) = Group.create(connection=conn, name=a.group).enqueue_many(queue, [data])
        print(job.id)
        return
    job = queue.enqueue_call(
        a.func,
        args=json.loads(a.args),
        kwargs=json.loads(a.kwargs),
        timeout=a.timeout,
        result_ttl=a.result_ttl,
        failure_ttl=a.failure_ttl,
        meta=json.loads(a.meta) if a.meta is not None else None,
        job_id=a.job_id,
        depends_on=a.depends_on,
    )
    print(job.id)


def cmd_delete(conn, a):
    """RQ's own Job.delete() (remove_from_queue=True, delete_dependents=False)."""
    Job.fetch(a.job_id, connection=conn).delete()
    print(json.dumps({"deleted": a.job_id}))


def cmd_fetch(conn, a):
    job = Job.fetch(a.job_id, connection=conn)
    print(
        json.dumps(
            {
                "id": job.id,
                "status": status_of(job),
                "origin": job.origin,
                "func_name": job.func_name,
                "args": list(job.args),
                "kwargs": job.kwargs,
                "meta": job.meta,
                "timeout": job.timeout,
                "result_ttl": job.result_ttl,
                "failure_ttl": job.failure_ttl,
                "description": job.description,
                "created_at": iso(job.created_at),
                "enqueued_at": iso(job.enqueued_at),
                "started_at": iso(job.started_at),
                "ended_at": iso(job.ended_at),
                "return_value": return_value(job),
            },
            default=repr,
            sort_keys=True,
        )
    )


def cmd_failed(conn, a):
    ids = FailedJobRegistry(a.queue, connection=conn).get_job_ids()
    print(json.dumps({"count": len(ids), "ids": ids}))


def cmd_requeue(conn, a):
    job = FailedJobRegistry(a.queue, connection=conn).requeue(a.job_id)
    print(json.dumps({"id": job.id, "status": status_of(job)}))


def cmd_queue(conn, a):
    queue = Queue(a.queue, connection=conn)
    print(json.dumps({"count": queue.count, "ids": queue.job_ids}))


def cmd_abandon(conn, a):
    """RQ's own StartedJobRegistry.cleanup, as worker maintenance runs it once a dead worker's
    job has expired there; the timestamp lies ahead so that it need not wait for that."""
    registry = StartedJobRegistry(a.queue, connection=conn)
    registry.cleanup(timestamp=time.time() + 86400)
    print(json.dumps({"failed": FailedJobRegistry(a.queue, connection=conn).get_job_ids()}))


def cmd_stop(conn, a):
    """RQ's own ``send_stop_job_command`` (what ``rq job stop`` sends): the worker running the
    job kills its work horse and fails the job with status ``stopped``."""
    from rq.command import send_stop_job_command

    send_stop_job_command(conn, a.job_id)
    print(json.dumps({"stopped": a.job_id}))


def cmd_leave_started(conn, a):
    """Lists a job in its queue's StartedJobRegistry again, expired long ago, as rq/rq#2424
    found finished jobs left there; RQ's cleanup (``abandon``) then fails it as abandoned.
    The member is what a worker adds: ``<id>:<execution id>`` in RQ 2.x, ``<id>`` in 1.x."""
    import uuid

    import rq

    registry = StartedJobRegistry(a.queue, connection=conn)
    member = a.job_id if rq.__version__.startswith("1.") else f"{a.job_id}:{uuid.uuid4().hex}"
    conn.zadd(registry.key, {member: 1})
    print(json.dumps({"started": [m.decode() for m in conn.zrange(registry.key, 0, -1)]}))


def cmd_registry(conn, a):
    """The ids in one of the queue's other registries, as RQ lists them."""
    kinds = {"finished": FinishedJobRegistry, "started": StartedJobRegistry}
    ids = kinds[a.name](a.queue, connection=conn).get_job_ids()
    print(json.dumps({"count": len(ids), "ids": ids}))


def cmd_workers(conn, a):
    """The workers RQ itself lists for the queue (its worker registry, dead keys left out)."""
    from rq import Worker

    queue = Queue(a.queue, connection=conn)
    names = sorted(w.name for w in Worker.all(queue=queue))
    print(json.dumps({"names": names}))


def cmd_stats(conn, a):
    """What RQ itself counts for every queue it knows (``Queue.all``): ``Queue.count`` and each
    registry's ``count`` (which runs RQ's own cleanup first)."""
    queues = {}
    for queue in sorted(Queue.all(connection=conn), key=lambda q: q.name):
        name = queue.name
        queues[name] = {
            "queued": queue.count,
            "started": StartedJobRegistry(name, connection=conn).count,
            "failed": FailedJobRegistry(name, connection=conn).count,
            "finished": FinishedJobRegistry(name, connection=conn).count,
            "deferred": DeferredJobRegistry(name, connection=conn).count,
            "scheduled": ScheduledJobRegistry(name, connection=conn).count,
        }
    failed = sum(q["failed"] for q in queues.values())
    print(json.dumps({"failed_count": failed, "queues": queues}, sort_keys=True))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="redis://host:port/db of the test's own server")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("enqueue", help="enqueue one job, print its id")
    p.add_argument("--queue", default="default")
    p.add_argument("--func", required=True, help="dotted name, e.g. tasks.fail_first")
    p.add_argument("--args", default="[]", help="JSON list")
    p.add_argument("--kwargs", default="{}", help="JSON object")
    p.add_argument("--meta", default=None, help="JSON object")
    p.add_argument("--timeout", type=int, default=None)
    p.add_argument("--result-ttl", type=int, default=None)
    p.add_argument("--failure-ttl", type=int, default=None)
    p.add_argument("--job-id", default=None)
    p.add_argument("--depends-on", default=None, help="a job id; the new job is deferred until it finishes")
    p.add_argument("--in-seconds", type=int, default=None, help="schedule instead: enqueue_in(timedelta(seconds=N))")
    p.add_argument("--group", default=None, help="RQ 2.x: enqueue through Group(name).enqueue_many")
    p.add_argument("--serializer", default=None, choices=["json"], help="enqueue with rq.serializers.JSONSerializer")
    p.add_argument("--method", action="store_true", help="--func is module.Class.method: enqueue that method of a new instance")
    p.set_defaults(run=cmd_enqueue)

    p = sub.add_parser("stop", help="RQ's own send_stop_job_command")
    p.add_argument("job_id")
    p.set_defaults(run=cmd_stop)

    p = sub.add_parser("leave-started", help="list a job in its StartedJobRegistry, expired")
    p.add_argument("--queue", default="default")
    p.add_argument("job_id")
    p.set_defaults(run=cmd_leave_started)

    p = sub.add_parser("delete", help="RQ's own Job.delete()")
    p.add_argument("job_id")
    p.set_defaults(run=cmd_delete)

    p = sub.add_parser("fetch", help="Job.fetch and print its state as JSON")
    p.add_argument("job_id")
    p.set_defaults(run=cmd_fetch)

    p = sub.add_parser("failed", help="ids in the queue's FailedJobRegistry")
    p.add_argument("--queue", default="default")
    p.set_defaults(run=cmd_failed)

    p = sub.add_parser("requeue", help="RQ's own FailedJobRegistry.requeue")
    p.add_argument("--queue", default="default")
    p.add_argument("job_id")
    p.set_defaults(run=cmd_requeue)

    p = sub.add_parser("queue", help="ids waiting in the queue")
    p.add_argument("--queue", default="default")
    p.set_defaults(run=cmd_queue)

    p = sub.add_parser("abandon", help="StartedJobRegistry.cleanup: fail the jobs of dead workers")
    p.add_argument("--queue", default="default")
    p.set_defaults(run=cmd_abandon)

    p = sub.add_parser("registry", help="ids in the queue's finished or started registry")
    p.add_argument("--queue", default="default")
    p.add_argument("--name", required=True, choices=["finished", "started"])
    p.set_defaults(run=cmd_registry)

    p = sub.add_parser("workers", help="names of the live workers RQ lists for the queue")
    p.add_argument("--queue", default="default")
    p.set_defaults(run=cmd_workers)

    p = sub.add_parser("stats", help="Queue.count and every registry's count, per queue RQ knows")
    p.set_defaults(run=cmd_stats)

    a = ap.parse_args(argv)
    conn = Redis.from_url(a.url)
    try:
        a.run(conn, a)
    finally:
        conn.close()


def serve():
    """``rqctl.py --serve``: runs one command per line of stdin (a JSON array of the arguments
    the command line would take) and answers each with one line of JSON: ``{"code", "stdout",
    "stderr"}``, as that command's own process would have ended. Python and RQ start once for
    the whole test program instead of once per call (about 0.25 s of CPU each)."""
    import contextlib
    import io
    import traceback

    for line in sys.stdin:
        out, err, code = io.StringIO(), io.StringIO(), 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(json.loads(line))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - reported as the process would report it
                traceback.print_exc()
                code = 1
        sys.stdout.write(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main(sys.argv[1:])

"""Fail one job with RQ's own code as RQ does on a Redis without streams (before 5.0): no
results stream, the traceback zlib-compressed in the job hash's ``exc_info``.

    python fail_without_streams.py REDIS_URL JOB_ID

RQ decides by the server's version (``Job.supports_redis_streams``); that property is made
false, and an in-process ``SimpleWorker`` (so the change holds) runs ``tasks.always_fail``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from redis import Redis  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402
import rq.job  # noqa: E402

import tasks  # noqa: E402

rq.job.Job.supports_redis_streams = property(lambda self: False)

url, job_id = sys.argv[1], sys.argv[2]
connection = Redis.from_url(url)
queue = Queue("default", connection=connection)
queue.enqueue(tasks.always_fail, "no streams here", job_id=job_id)
SimpleWorker([queue], connection=connection).work(burst=True)

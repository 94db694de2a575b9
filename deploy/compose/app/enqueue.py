"""Enqueues one job that fails twice before it succeeds; rq-retryd retries it."""

import os
import uuid

from redis import Redis
from rq import Queue

redis = Redis.from_url(os.environ["REDIS_URL"])
job = Queue("default", connection=redis).enqueue("tasks.flaky", f"example:{uuid.uuid4()}", 2)
print(f"enqueued {job.id}: watch it at http://127.0.0.1:9732/ui/job?id={job.id}")

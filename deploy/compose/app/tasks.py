"""The example's job: fails the first `failures` times it runs, then returns."""

import os

from redis import Redis

redis = Redis.from_url(os.environ["REDIS_URL"])


def flaky(key, failures):
    runs = redis.incr(key)
    if runs <= failures:
        raise ConnectionError(f"downstream unavailable (run {runs})")
    return f"succeeded on run {runs}"

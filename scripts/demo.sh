#!/usr/bin/env bash
# The out-of-the-box demo: real RQ 2.x workers fail some jobs, rq-retryd puts them right.
#
#   ./scripts/demo.sh
#
# It builds the release binary, starts a throwaway redis-server on a free port (never the one
# on 6379), enqueues three flaky jobs (each fails its first 2 runs with "upstream timed out")
# and one that always fails with ValueError, lets a burst worker fail them all, and then runs a
# few rounds of `rq-retryd once` + `rq worker --burst`. The flaky jobs end `finished` after two
# automatic retries; the ValueError job is purged by the bad-input policy.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
# Keep the repository free of __pycache__ and RQ 1.x/click deprecation noise.
export PYTHONDONTWRITEBYTECODE=1 PYTHONWARNINGS=ignore
queue=demo
flaky_jobs=3
max_rounds=6

say() {
  if [[ -t 1 ]]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi
}

say "building rq-retryd (release)"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-$repo/target}/release/rq-retryd"
[[ -x $bin ]] || { echo "error: built binary not found at $bin" >&2; exit 1; }

say "preparing redis-server and the RQ 2.x virtualenv"
./scripts/test.sh --setup-only >/dev/null
venv="$repo/target/venv-rq2"
py="$venv/bin/python"
rqctl=("$py" "$repo/tests/python/rqctl.py")

workdir=$(mktemp -d)
redis_pid=""
# Stops the throwaway server and removes the temp dir however the demo ends.
cleanup() {
  [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$workdir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$workdir" \
  >"$workdir/redis.log" 2>&1 &
redis_pid=$!
url="redis://127.0.0.1:$port/0"
for _ in $(seq 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$port" ping >/dev/null || { echo "error: redis-server did not start" >&2; exit 1; }
echo "throwaway redis-server on port $port"

# Runs one burst worker over the demo queue; its log goes to a file, shown only on failure.
burst_worker() {
  if ! "$venv/bin/rq" worker --burst -u "$url" --path "$repo/tests/python" "$queue" \
      >>"$workdir/worker.log" 2>&1; then
    cat "$workdir/worker.log" >&2
    echo "error: rq worker failed" >&2
    exit 1
  fi
}

# Prints one line per demo job: RQ's status plus the fields rq-retryd keeps on the hash.
show_jobs() {
  "$py" - "$url" "$queue" "${ids[@]}" <<'PY'
import sys
from redis import Redis
from rq.job import Job
from rq.exceptions import NoSuchJobError
from rq.registry import FailedJobRegistry

url, queue, *ids = sys.argv[1:]
conn = Redis.from_url(url)
failed = set(FailedJobRegistry(queue, connection=conn).get_job_ids())
print(f"  {'job':<10} {'function':<20} {'status':<9} {'attempts':>8}  {'exhausted':<9} {'in failed registry'}")
for job_id in ids:
    try:
        job = Job.fetch(job_id, connection=conn)
    except NoSuchJobError:
        print(f"  {job_id[:8]:<10} {'-':<20} {'(deleted)':<9} {'-':>8}  {'-':<9} {job_id in failed}")
        continue
    status = job.get_status()
    fields = {k.decode(): v.decode() for k, v in conn.hgetall(job.key).items() if k.startswith(b"retryd_")}
    print(f"  {job_id[:8]:<10} {job.func_name:<20} {getattr(status, 'value', status):<9} "
          f"{fields.get('retryd_attempts', '0'):>8}  {fields.get('retryd_exhausted', '-'):<9} {job_id in failed}")
PY
}

say "enqueueing $flaky_jobs flaky jobs (fail twice with 'upstream timed out') and 1 bad-input job"
ids=()
flaky_ids=()
for i in $(seq "$flaky_jobs"); do
  id=$("${rqctl[@]}" --url "$url" enqueue --queue "$queue" --func tasks.fail_first \
    --args "[\"demo:flaky:$i\", 2]" --kwargs "{\"value\": \"report $i sent\"}")
  ids+=("$id")
  flaky_ids+=("$id")
done
bad_id=$("${rqctl[@]}" --url "$url" enqueue --queue "$queue" --func tasks.always_fail \
  --args '["card number failed Luhn check"]')
ids+=("$bad_id")
show_jobs

say "rq worker --burst: every job fails its first run"
burst_worker
show_jobs

config="$workdir/rq-retryd.toml"
cat >"$config" <<TOML
[redis]
url = "$url"

[supervisor]
queues = ["$queue"]
max_requeues_per_second = 1000

[logging]
level = "warn"

[[policy]]
name = "transient-network"
exceptions = ["ConnectionError", "TimeoutError"]
error_pattern = "(?i)timed? ?out"
action = "retry"
max_attempts = 5
backoff = { strategy = "fixed", delay = "1s" }

[[policy]]
name = "bad-input"
exceptions = ["ValueError"]
action = "purge"
TOML
say "rq-retryd config ($config)"
sed 's/^/  /' "$config"

all_finished() {
  local id
  for id in "${flaky_ids[@]}"; do
    [[ $("${rqctl[@]}" --url "$url" fetch "$id" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["status"])') == finished ]] || return 1
  done
}

for round in $(seq "$max_rounds"); do
  say "round $round: wait out the 1s backoff, then rq-retryd once"
  sleep 1.2
  "$bin" --config "$config" once --json
  show_jobs
  say "round $round: rq worker --burst"
  burst_worker
  show_jobs
  if all_finished; then
    break
  fi
done

say "result"
ok=true
if all_finished; then
  echo "  all $flaky_jobs flaky jobs finished after automatic retries"
else
  echo "  NOT all flaky jobs finished after $max_rounds rounds" >&2
  ok=false
fi
if [[ $(redis-cli -p "$port" exists "rq:job:$bad_id") == 0 ]] &&
   [[ -z $(redis-cli -p "$port" zscore "rq:failed:$queue" "$bad_id") ]]; then
  echo "  the ValueError job was purged by the bad-input policy"
elif [[ $(redis-cli -p "$port" hget "rq:job:$bad_id" retryd_exhausted) == 1 ]]; then
  echo "  the ValueError job is kept in the failed registry, marked exhausted"
else
  echo "  the ValueError job was neither purged nor marked exhausted" >&2
  ok=false
fi
$ok || exit 1
say "demo done"

#!/usr/bin/env bash
# The out-of-the-box demo: real RQ 2.x workers fail jobs, the rq-retryd daemon retries them on
# its own, and its operator console shows what is failing and why.
#
#   ./scripts/demo.sh           # stays up with the console until Ctrl-C
#   ./scripts/demo.sh --exit    # finishes by itself once the retries are done (also under CI=true)
#
# It builds the release binary (with cargo's progress), starts a throwaway redis-server on a
# free port (never the one on 6379) and two long-running `rq worker` processes, enqueues jobs
# that fail in different ways, and runs `rq-retryd run` with three policies:
#   - transient-network: "upstream timed out" ConnectionErrors, retried after 1 s, up to 5 times:
#     these jobs fail twice, then finish;
#   - bad-input: ValueErrors, purged after 10 minutes (until then they wait in the console);
#   - anything else (a KeyError here) is matched by no policy and left alone.
# A table of what the daemon's API says about each failed job (state, policy, failure text) is
# printed every second until the flaky jobs have finished.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
# Keep the repository free of __pycache__ and RQ/click deprecation noise.
export PYTHONDONTWRITEBYTECODE=1 PYTHONWARNINGS=ignore
queue=demo
flaky_jobs=4
bad_jobs=2
stay=true
[[ ${1:-} == --exit || ${CI:-} == true ]] && stay=false
deadline_s=90

say() {
  if [[ -t 1 ]]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi
}

say "building rq-retryd (release; about 5 minutes the first time)"
cargo build --release
bin="${CARGO_TARGET_DIR:-$repo/target}/release/rq-retryd"
[[ -x $bin ]] || { echo "error: built binary not found at $bin" >&2; exit 1; }

say "preparing redis-server and the RQ 2.x virtualenv"
./scripts/test.sh --setup-only >/dev/null
venv="$repo/target/venv-rq2"
py="$venv/bin/python"
rqctl=("$py" "$repo/tests/python/rqctl.py")

workdir=$(mktemp -d)
pids=()
# Stops the daemon, the workers and the throwaway server however the demo ends.
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'echo; exit 0' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
# Keyspace notifications let the daemon see a new failure within a second, without waiting
# for its next scan.
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$workdir" \
  --notify-keyspace-events Kz >"$workdir/redis.log" 2>&1 &
pids+=($!)
url="redis://127.0.0.1:$port/0"
for _ in $(seq 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$port" ping >/dev/null || { echo "error: redis-server did not start" >&2; exit 1; }
echo "throwaway redis-server on port $port"

http_port=$(free_port)
config="$workdir/rq-retryd.toml"
cat >"$config" <<TOML
[redis]
url = "$url"

[supervisor]
queues = ["$queue"]
scan_interval = "2s"

[http]
listen = "127.0.0.1:$http_port"

[logging]
level = "info"

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
purge_after = "10m"
TOML
say "rq-retryd config ($config)"
sed 's/^/  /' "$config"

say "starting rq-retryd run and two rq workers"
"$bin" --config "$config" run >"$workdir/rq-retryd.log" 2>&1 &
pids+=($!)
daemon_pid=$!
api="http://127.0.0.1:$http_port"
for _ in $(seq 100); do
  curl -fsS "$api/readyz" >/dev/null 2>&1 && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$workdir/rq-retryd.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$api/readyz" >/dev/null || { cat "$workdir/rq-retryd.log" >&2; exit 1; }
echo "rq-retryd is up: $api (log: rq-retryd.log in the work directory)"
for w in 1 2; do
  "$venv/bin/rq" worker -u "$url" --path "$repo/tests/python" -n "demo-worker-$w" "$queue" \
    >>"$workdir/worker-$w.log" 2>&1 &
  pids+=($!)
done

say "enqueueing $flaky_jobs flaky jobs (fail twice: 'upstream timed out'), $bad_jobs bad-input jobs, 1 KeyError"
flaky_ids=()
for i in $(seq "$flaky_jobs"); do
  flaky_ids+=("$("${rqctl[@]}" --url "$url" enqueue --queue "$queue" --func tasks.fail_first \
    --args "[\"demo:flaky:$i\", 2]" --kwargs "{\"value\": \"report $i sent\"}")")
done
for i in $(seq "$bad_jobs"); do
  "${rqctl[@]}" --url "$url" enqueue --queue "$queue" --func tasks.always_fail \
    --args "[\"card $i failed the Luhn check\"]" >/dev/null
done
"${rqctl[@]}" --url "$url" enqueue --queue "$queue" --func tasks.missing_key >/dev/null

# What the daemon's API says: every failed job with its state, deciding policy and failure,
# and RQ's status of the flaky jobs.
show() {
  "$py" - "$api" "$url" "${flaky_ids[@]}" <<'PY'
import json, sys, urllib.request
from redis import Redis
from rq.job import Job

api, url, *flaky = sys.argv[1:]
listing = json.load(urllib.request.urlopen(f"{api}/api/v1/jobs/failed?limit=20"))
print(f"  failed jobs (as of {listing['as_of'][11:19]}, from the {listing['source']}): {listing['total']}")
print(f"  {'job':<9} {'function':<18} {'state':<10} {'policy':<18} {'tries':>5}  failure")
for j in listing["jobs"]:
    last = (j.get("exc_info") or j.get("decode_error") or "").strip().splitlines()[-1:] or [""]
    print(f"  {j['job_id'][:8]:<9} {(j['func_name'] or '-'):<18} {(j['state'] or '-'):<10} "
          f"{(j['policy'] or '(none)'):<18} {j['attempts']:>5}  {last[0][:60]}")
conn = Redis.from_url(url)
states = [Job.fetch(i, connection=conn).get_status() for i in flaky]
print("  flaky jobs: " + ", ".join(getattr(s, "value", str(s)) for s in states))
PY
}

all_finished() {
  local id
  for id in "${flaky_ids[@]}"; do
    [[ $("${rqctl[@]}" --url "$url" fetch "$id" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["status"])') == finished ]] || return 1
  done
}

say "the workers fail the jobs; rq-retryd retries the flaky ones on its own"
started=$SECONDS
until all_finished; do
  if (( SECONDS - started > deadline_s )); then
    show
    echo "error: the flaky jobs did not finish within ${deadline_s}s; the daemon's log:" >&2
    tail -n 40 "$workdir/rq-retryd.log" >&2
    exit 1
  fi
  show
  sleep 1
done
show

say "result"
echo "  all $flaky_jobs flaky jobs finished after automatic retries ($((SECONDS - started)) s)"
requeued=$(curl -fsS "$api/metrics" | awk '/^rq_retryd_requeued_total/ {s += $2} END {print s + 0}')
echo "  rq-retryd requeued $requeued times; the ValueError jobs wait for their purge, the KeyError is left alone"
if ! $stay; then
  say "demo done"
  exit 0
fi
say "the console: $api/ui/   (API explorer: $api/docs)   — Ctrl-C stops everything"
while kill -0 "$daemon_pid" 2>/dev/null; do sleep 1; done
echo "rq-retryd stopped:" >&2
tail -n 20 "$workdir/rq-retryd.log" >&2
exit 1

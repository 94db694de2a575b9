#!/usr/bin/env bash
# The first full build at scale, builds side by side: starts each rq-retryd binary in turn on the
# same seeded Redis (index_api.py's config), times daemon start -> its index answering
# (`index_as_of` set) and -> its first `last_scan` (the pass done; main sets both at once), and
# prints the daemon's and Redis's CPU and the daemon's peak RSS. Rounds interleave the binaries,
# so a slow spell of the shared host falls on all of them (docs/benchmarks.md, session 6).
#
#   bench/first_build.sh SNAPSHOT.rdb ROUNDS BINARY...
#   bench/first_build.sh target/bench/seed-1000000-default-emails-reports-venv-rq2-x2.rdb 3 \
#       target/bench/rq-retryd-779672b target/release/rq-retryd
#
# The snapshot comes from `bench/index_api.py --jobs N --seed-only`. The scan only reads (its
# policies wait 30 days or ignore), so one Redis serves every start.
#
# THREADS=1 also prints the CPU seconds of each of the daemon's threads (those over 0.5 s) at
# the end of each build: which thread binds (the scan's task, the connection's reader, ...).
#
# RATE=1 also prints, every 10 s of each build, how many jobs Redis has read so far (its HMGET
# calls): the pass's pace over time (docs/benchmarks.md, session 19).
#
# PROBE=1 also fails new jobs during each build (bench/first_build_probe.py: one retried at
# once and one 5 s after its failure, every 5 s) and prints how soon each was requeued: the
# notified reaction and the due pass during a first build (issue 24, item 4). Its two
# policies come first in the config; they match only its own queues.
#
# CALLGRIND=1 runs each binary under `valgrind --tool=callgrind` and prints the instructions it
# ran (Ir) for its build: a count that, unlike the seconds, does not move with the host's load
# (docs/benchmarks.md, session 21). The profiles stay in $CALLGRIND_DIR (target/bench/callgrind)
# for callgrind_annotate. Use a small snapshot (100k jobs): the build runs 50-100x slower.
set -euo pipefail

[[ $# -ge 3 ]] || { sed -n 2,13p "$0" >&2; exit 2; }
snapshot=$(realpath "$1")
# index_api.py imports redis: the benchmark venv's python (test.sh --setup-only makes it).
python=${PYTHON:-$(dirname "$0")/../target/venv-rq2/bin/python}
rounds=$2
shift 2

work=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

ln -s "$snapshot" "$work/dump.rdb"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --dbfilename dump.rdb \
  --save '' --appendonly no --daemonize yes --logfile "$work/redis.log"
until [[ $(redis-cli -p "$redis_port" info persistence 2>/dev/null | tr -d '\r' | grep '^loading:') == loading:0 ]]; do
  sleep 0.5
done
echo "Redis on $redis_port: $(redis-cli -p "$redis_port" dbsize) keys"

cat >"$work/config.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$redis_port/0"
[supervisor]
scan_interval = "1h"
batch_size = 1000
max_requeues_per_second = 1000000
[http]
listen = "127.0.0.1:$http_port"
[logging]
level = "warn"
EOF
if [[ ${PROBE:-0} == 1 ]]; then
  "$python" "$(dirname "$0")/first_build_probe.py" --policies >>"$work/config.toml"
fi
# The same policies as bench/index_api.py (its POLICIES), read from there rather than copied.
"$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); from index_api import POLICIES; print(POLICIES)' \
  "$(dirname "$0")" >>"$work/config.toml"

redis_cpu() {
  redis-cli -p "$redis_port" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { print s }'
}

for round in $(seq "$rounds"); do
  for binary in "$@"; do
    r0=$(redis_cpu)
    redis-cli -p "$redis_port" config resetstat >/dev/null
    t0=$(date +%s.%N)
    profile=
    if [[ ${CALLGRIND:-0} == 1 ]]; then
      mkdir -p "${CALLGRIND_DIR:=$(dirname "$0")/../target/bench/callgrind}"
      profile=$CALLGRIND_DIR/callgrind.$(basename "$binary").$round
      valgrind --tool=callgrind --callgrind-out-file="$profile" \
        "$binary" --config "$work/config.toml" run 2>>"$work/daemon.log" &
    else
      "$binary" --config "$work/config.toml" run 2>>"$work/daemon.log" &
    fi
    pid=$!
    probe=
    if [[ ${PROBE:-0} == 1 ]]; then
      "$python" "$(dirname "$0")/first_build_probe.py" --url "redis://127.0.0.1:$redis_port/0" \
        --seconds "${PROBE_SECONDS:-150}" --every 5 --json "$work/probe.json" >"$work/probe.out" &
      probe=$!
    fi
    ti=
    started=$SECONDS
    next_rate=0
    until curl -s "127.0.0.1:$http_port/api/v1/supervisor" >"$work/supervisor.json" 2>/dev/null &&
      grep -q '"last_scan":{' "$work/supervisor.json"; do
      kill -0 "$pid" 2>/dev/null || { echo "$binary exited; see its log:" >&2; tail "$work/daemon.log" >&2; exit 1; }
      if [[ -z $ti ]] && grep -q '"index_as_of":"' "$work/supervisor.json"; then
        ti=$(date +%s.%N)
      fi
      if [[ ${RATE:-0} == 1 ]] && (( SECONDS - started >= next_rate )); then
        printf '    %5.0f s  %8s jobs read\n' "$(echo "$(date +%s.%N) - $t0" | bc)" \
          "$(redis-cli -p "$redis_port" info commandstats | tr -d '\r' | awk -F'[=,]' '/^cmdstat_hmget:/ { n = $2 } END { print n + 0 }')"
        next_rate=$((next_rate + 10))
      fi
      sleep 0.1
    done
    t1=$(date +%s.%N)
    ti=${ti:-$t1}
    r1=$(redis_cpu)
    cpu=$(awk '{ print ($14 + $15) / 100 }' "/proc/$pid/stat")
    hwm=$(awk '/^VmHWM/ { print $2 / 1024 }' "/proc/$pid/status")
    if [[ ${THREADS:-0} == 1 ]]; then
      for task in /proc/"$pid"/task/*; do
        # comm may hold spaces: the fields after its closing parenthesis, utime and stime
        # being the 12th and 13th of those.
        sed -E 's/^[0-9]+ \((.*)\) (.*)$/\1|\2/' "$task/stat"
      done | awk -F'|' '{ split($2, f, " "); c = (f[12] + f[13]) / 100; if (c >= 0.5) printf "    thread %-24s %7.2f s\n", $1, c }' |
        sort -k3 -nr
    fi
    if [[ -n $probe ]]; then
      wait "$probe" || true
      sed 's/^/    /' "$work/probe.out"
    fi
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    if [[ -n $profile ]]; then
      printf '    callgrind: %s instructions (%s)\n' \
        "$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')" "$profile"
    fi
    printf 'round %s  %-40s index %6.2f s  pass %6.2f s  daemon CPU %6.2f s  Redis CPU %6.2f s  VmHWM %4.0f MiB\n' \
      "$round" "$binary" "$(echo "$ti - $t0" | bc)" "$(echo "$t1 - $t0" | bc)" "$cpu" "$(echo "$r1 - $r0" | bc)" "$hwm"
  done
done

#!/usr/bin/env bash
# One command from a clean clone: build the release binary, make the RQ venv, run the benchmark.
#   bench/run.sh [--count 100000] [--skip-rq] [--json results.json]      bulk requeue (bench.py)
#   bench/run.sh index [--jobs 200000] [--bulk] [--check] ...            failure index API (index_api.py)
#   bench/run.sh storm [--rates 2000,5000,10000] [--seconds 60] ...     failures arriving live (storm.py)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/test.sh --setup-only >/dev/null
cargo build --release --quiet
if [[ ${1:-} == index ]]; then
  shift
  exec target/venv-rq2/bin/python bench/index_api.py "$@"
fi
if [[ ${1:-} == storm ]]; then
  shift
  exec target/venv-rq2/bin/python bench/storm.py "$@"
fi
exec target/venv-rq2/bin/python bench/bench.py "$@"

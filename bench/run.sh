#!/usr/bin/env bash
# One command from a clean clone: build the release binary, make the RQ venv, run the benchmark.
#   bench/run.sh [--count 100000] [--skip-rq] [--json results.json]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/test.sh --setup-only >/dev/null
cargo build --release --quiet
exec target/venv-rq2/bin/python bench/bench.py "$@"

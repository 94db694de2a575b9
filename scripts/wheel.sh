#!/usr/bin/env bash
# Builds the wheel of issue 23: `pip install rq-retryd-*.whl` puts the `rq-retryd` binary on the
# venv's PATH (pyproject.toml; README "Using it").
#
#   ./scripts/wheel.sh         release build into target/wheels/ (the wheel to publish or copy)
#   ./scripts/wheel.sh --dev   what CI builds (scripts/test.sh): the same kind of wheel, built with
#                              cargo's dev profile without debug info, into target/wheels-dev/
#
# Steps, and why:
#   1. target/venv-wheel holds the pinned build tools (reused while the pins match): maturin packs
#      the binary (bindings = "bin"), ziglang's zig links it against glibc 2.17's symbols, and
#      auditwheel checks the result.
#   2. maturin build --zig --compatibility manylinux2014: linked by zig for
#      x86_64-unknown-linux-gnu.2.17, so the wheel runs on any x86_64 Linux with glibc 2.17 or
#      newer (manylinux_2_17, the tag pip expects of ruff's and uv's wheels) instead of only on
#      this machine's glibc. The version is Cargo.toml's (maturin reads it there). The commit goes
#      in through RQ_RETRYD_GIT_COMMIT (build.rs), so `rq-retryd --version` from the wheel names
#      it even where maturin builds without .git (an sdist). Without debug info, like the .deb
#      (Cargo.toml's release profile keeps debug = 1 for profiling). --zig makes cargo build for
#      an explicit --target, in target/x86_64-unknown-linux-gnu/, so it does not reuse target/release
#      or target/debug.
#   3. auditwheel show must find the wheel consistent with manylinux_2_17_x86_64 (only glibc's
#      own libraries, no symbol newer than 2.17); the script fails otherwise.
# Prints the path of the wheel as its last line.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

WHEEL_PINS=(maturin==1.16.0 ziglang==0.17.0 auditwheel==6.8.2)
TAG=manylinux_2_17_x86_64

die() { echo "error: $*" >&2; exit 1; }

profile=release
case "${1:-}" in
  --dev) profile=dev ;;
  "") ;;
  *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac

venv=${RQ_RETRYD_VENV_WHEEL:-$repo/target/venv-wheel}
have=$("$venv/bin/python" -c '
import sys
from importlib.metadata import version
names = [pin.split("==")[0] for pin in sys.argv[1:]]
print(" ".join(name + "==" + version(name) for name in names))
' "${WHEEL_PINS[@]}" 2>/dev/null || true)
if [[ $have != "${WHEEL_PINS[*]}" ]]; then
  echo "creating $venv (${WHEEL_PINS[*]})" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q "${WHEEL_PINS[@]}" >&2
fi
# maturin runs zig as `python3 -m ziglang` from the venv (ziglang ships no zig on PATH).
export PATH=$venv/bin:$PATH

if [[ -z ${RQ_RETRYD_GIT_COMMIT:-} ]]; then
  RQ_RETRYD_GIT_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null) \
    || die "not a git checkout: set RQ_RETRYD_GIT_COMMIT to the commit this source is from"
fi
export RQ_RETRYD_GIT_COMMIT

if [[ $profile == release ]]; then
  out=target/wheels
  export CARGO_PROFILE_RELEASE_DEBUG=false
  profile_args=(--release)
else
  out=target/wheels-dev
  export CARGO_PROFILE_DEV_DEBUG=false
  profile_args=(--profile dev)
fi
version=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["packages"][0]["version"])')
rm -f "$out"/rq_retryd-*.whl
maturin build "${profile_args[@]}" --locked --zig --compatibility manylinux2014 --out "$out" >&2

wheel=$(ls "$out"/rq_retryd-"$version"-py3-none-*"$TAG".whl 2>/dev/null | head -n 1)
[[ -n $wheel ]] || die "maturin wrote no $out/rq_retryd-$version-py3-none-*$TAG.whl: $(ls "$out")"
report=$(auditwheel show "$wheel")
echo "$report" >&2
# auditwheel names the tag on the line after this one.
grep -A1 'is consistent with the following platform tag' <<<"$report" | grep -q "\"$TAG\"" \
  || die "auditwheel does not find $wheel consistent with $TAG"
echo "$repo/$wheel"

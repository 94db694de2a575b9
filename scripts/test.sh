#!/usr/bin/env bash
# The one command that runs every check of rq-retryd on a fresh machine (CI runs it via .ci/run).
#
#   ./scripts/test.sh               install what is missing, then fmt, clippy and all tests
#   ./scripts/test.sh --setup-only  only install redis-server and the two RQ venvs (used by demo.sh)
#
# What it provides, and why:
#   - redis-server: the integration tests start their own throwaway server on a free port
#     (never the one on 6379); installed with apt only when the binary is missing.
#   - target/venv-rq2 (rq 2.12.0) and target/venv-rq1 (rq 1.16.2): the interop tests drive real
#     RQ workers of both major versions. Reused when they already hold the pinned versions, so
#     re-runs cost nothing; rebuilt when a pin changes.
#   - promtool (Debian's prometheus package, only when missing): tests/it/metrics_promtool.rs runs
#     `promtool check metrics` on the daemon's /metrics.
#   - prometheus and systemd-analyze (Debian's prometheus and systemd packages, only when
#     missing): tests/it/deploy.rs scrapes the daemon with a real Prometheus and verifies the unit.
#   - target/venv-tools (schemathesis, pinned): tests/it/api_fuzz.rs fuzzes the HTTP API from its
#     OpenAPI document; reused like the RQ venvs.
#   - target/venv-deploy (kubernetes-validate, the Prometheus Operator's models,
#     check-jsonschema, dockerfile; pinned): tests/it/deploy.rs validates deploy/kubernetes,
#     deploy/compose and the Dockerfile (scripts/kubernetes.py, scripts/containers.py).
#   - chromium and chromedriver (Debian's chromium and chromium-driver packages, only when
#     missing): tests/it/browser.rs drives the console and /docs in headless Chromium.
#   - cargo-fuzz (pinned, cargo install only when missing): a bounded fuzz run of the job
#     decoder and the config loader (fuzz/README.md); RQ_RETRYD_FUZZ_SECONDS sets the time per
#     target (default 20).
#   - cargo-deb (pinned, cargo install only when missing), man-db and debootstrap (apt, only
#     when missing): `scripts/package.sh --dev` builds the Debian package around the tests'
#     binary (no release build in CI), and tests/it/package.rs
#     installs it with dpkg -i, checks it (`man -l` renders the page), removes and purges it
#     ($RQ_RETRYD_DEB), and installs it with apt-get into a bare Debian 12 made by debootstrap
#     (once: scripts/debian-root.sh keeps it as a tarball in target/debian-root/).
#   - target/venv-wheel (maturin, ziglang, auditwheel; pinned in scripts/wheel.sh, reused like
#     the RQ venvs): `scripts/wheel.sh --dev` builds the wheel ($RQ_RETRYD_WHEEL) with maturin
#     --zig for manylinux_2_17, with cargo's dev profile without debug info (about 3 minutes on
#     2 cores, since --zig builds into its own target/x86_64-unknown-linux-gnu/; the release
#     wheel of scripts/wheel.sh takes about 5) and checks it with `auditwheel show`;
#     tests/it/deploy.rs pip-installs it into a fresh venv next to rq==2.12.0 (from PyPI, or pip's
#     cache) and runs the installed command as a Procfile line would.
# Works unattended (CI=true, no stdin).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

# Pins: RQ itself, plus redis-py so a new client release cannot change what the tests see.
RQ2_PINS=(rq==2.12.0 redis==8.1.0)
RQ1_PINS=(rq==1.16.2 redis==8.1.0)
# The API fuzzer (its `st run` flags are used by tests/it/api_fuzz.rs).
TOOLS_PINS=(schemathesis==4.32.5)
# deploy/ is validated strictly: Kubernetes' own schemas and the Prometheus Operator's CRDs as
# cloudcoil's models carry them (scripts/kubernetes.py), the compose spec (check-jsonschema),
# and the Dockerfile with BuildKit's parser (scripts/containers.py).
DEPLOY_PINS=(kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0 cloudcoil==0.6.0
  pydantic==2.14.4 jsonschema==4.26.0 PyYAML==6.0.4 check-jsonschema==0.39.0 dockerfile==3.4.0)

setup_only=false
case "${1:-}" in
  --setup-only) setup_only=true ;;
  "") ;;
  *) echo "usage: $0 [--setup-only]" >&2; exit 2 ;;
esac

started=$SECONDS
step() { printf '\n==> [%4ss] %s\n' "$((SECONDS - started))" "$*"; }
die() { echo "error: $*" >&2; exit 1; }

# Runs apt-get as root, through sudo only when we are not root already.
apt_install() {
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to apt-get install $*"
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

step "checking redis-server"
if ! command -v redis-server >/dev/null; then
  echo "redis-server is missing: installing it with apt-get"
  apt_install redis-server
fi
redis-server --version

step "checking python3 venv support"
command -v python3 >/dev/null || apt_install python3
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "python3 cannot create venvs: installing python3-venv with apt-get"
  apt_install python3-venv
fi

# ensure_venv DIR PIN... — (re)creates DIR so that it holds exactly the pinned distributions.
ensure_venv() {
  local dir=$1
  shift
  local want have
  want=$(printf '%s\n' "$@" | LC_ALL=C sort | paste -sd' ')
  if [[ -x $dir/bin/python ]]; then
    have=$("$dir/bin/python" - "$@" <<'PY' 2>/dev/null || true
import sys
from importlib.metadata import version, PackageNotFoundError
out = []
for pin in sys.argv[1:]:
    name = pin.split("==")[0]
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        out.append(f"{name}==missing")
print(" ".join(sorted(out)))
PY
)
    if [[ $have == "$want" ]]; then
      echo "reusing $dir ($want)"
      return
    fi
    echo "rebuilding $dir: has '${have}', want '${want}'"
    rm -rf "$dir"
  fi
  echo "creating $dir ($want)"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --disable-pip-version-check --no-input -q "$@"
}

step "preparing RQ virtualenvs"
mkdir -p target
ensure_venv "$repo/target/venv-rq2" "${RQ2_PINS[@]}"
ensure_venv "$repo/target/venv-rq1" "${RQ1_PINS[@]}"
export RQ_RETRYD_VENV_RQ2="$repo/target/venv-rq2"
export RQ_RETRYD_VENV_RQ1="$repo/target/venv-rq1"

if $setup_only; then
  step "setup done"
  exit 0
fi

step "checking test tools (promtool, chromium, schemathesis)"
if ! command -v promtool >/dev/null; then
  echo "promtool is missing: installing Debian's prometheus package with apt-get"
  apt_install --no-install-recommends prometheus
fi
promtool --version 2>&1 | sed -n 1p
# tests/it/deploy.rs also starts a real Prometheus (same package) and checks the systemd unit.
command -v prometheus >/dev/null || apt_install --no-install-recommends prometheus
# tests/it/tls.rs makes its CA and certificates with the openssl command.
command -v openssl >/dev/null || apt_install --no-install-recommends openssl
if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze is missing: installing Debian's systemd package with apt-get"
  apt_install --no-install-recommends systemd
fi
# tests/it/browser.rs runs the console in headless Chromium through chromedriver (WebDriver).
if [[ ! -x ${RQ_RETRYD_CHROMIUM:-/usr/bin/chromium} || ! -x ${RQ_RETRYD_CHROMEDRIVER:-/usr/bin/chromedriver} ]]; then
  echo "chromium or chromedriver is missing: installing Debian's chromium and chromium-driver with apt-get"
  apt_install chromium chromium-driver
fi
"${RQ_RETRYD_CHROMEDRIVER:-/usr/bin/chromedriver}" --version
ensure_venv "$repo/target/venv-tools" "${TOOLS_PINS[@]}"
export RQ_RETRYD_VENV_TOOLS="$repo/target/venv-tools"
ensure_venv "$repo/target/venv-deploy" "${DEPLOY_PINS[@]}"
export RQ_RETRYD_VENV_DEPLOY="$repo/target/venv-deploy"

command -v cargo >/dev/null || die "cargo is not installed (rust-version in Cargo.toml says which toolchain)"
# Never let a developer's environment point the binary under test at a real Redis.
unset RQ_RETRYD_CONFIG RQ_RETRYD_REDIS_URL RQ_RETRYD_HTTP_LISTEN RQ_RETRYD_AUTH_TOKEN RQ_RETRYD_ALLOWED_HOSTS REDIS_URL PORT

# tests/it/package.rs also installs the .deb into a bare Debian 12 made by debootstrap (from
# Debian's mirror), where a missing dependency shows. scripts/debian-root.sh makes that root once
# as a tarball in target/debian-root/ (about 90 s, mostly network and dpkg, little CPU) and
# reuses it after; started here in the background, it overlaps fmt, clippy and the build, and
# `cargo test` waits for it below, so the test program only extracts it.
if ! command -v debootstrap >/dev/null; then
  echo "debootstrap is missing: installing it with apt-get"
  apt_install --no-install-recommends debootstrap
fi
step "scripts/debian-root.sh in the background (log: target/debian-root.log)"
./scripts/debian-root.sh >"$repo/target/debian-root.log" 2>&1 &
debian_root=$!

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

# Issue 20's layout targets: no function in src/ over 80 lines, no two modules importing each
# other; exceptions only in scripts/structure-allowlist.txt, with their reasons (under a second).
step "scripts/check-structure.py"
python3 scripts/check-structure.py

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# The tests' build first: the .deb below packages its binary (package.sh --dev), and
# `cargo test` at the end then builds nothing.
step "cargo build --all-targets"
cargo build --all-targets

# Bounded fuzzing of the job decoder and the config loader with cargo-fuzz (fuzz/README.md).
# cargo-fuzz passes -Zsanitizer=address, which the stable toolchain accepts with
# RUSTC_BOOTSTRAP=1 (set for these commands only). --dev: debug assertions and overflow checks,
# with opt-level 1 only for the code the targets run (fuzz/Cargo.toml). New inputs go to a
# scratch corpus under fuzz/target; the committed seeds in fuzz/corpus are only read. A crash,
# a failed check, a timeout or an out-of-memory fails the script; the input is left in
# fuzz/artifacts/<target>/ and the log's tail is printed.
#
# It runs in the background beside the .deb and the wheel (waited for before `cargo test`):
# its instrumented build of the whole dependency tree (433 s of CPU in 471 s of wall time, on
# 2 cores shared with other work) and the wheel's build (164 s of CPU in 225 s) each leave
# much of the second core idle, one after the other; side by side they use both.
CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${RQ_RETRYD_FUZZ_SECONDS:-20}
fuzz() {
  if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "cargo-fuzz $CARGO_FUZZ_VERSION is missing: installing it with cargo install"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
  fi
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --dev)
  # The two targets side by side, one core each (a libFuzzer run is single-threaded).
  local -A fuzzing=()
  local target
  for target in decode_job parse_config; do
    local scratch=$repo/fuzz/target/corpus/$target
    mkdir -p "$scratch"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --dev "$target" "$scratch" "corpus/$target" -- \
      -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) \
      >"$repo/fuzz/target/fuzz-$target.log" 2>&1 &
    fuzzing[$target]=$!
  done
  for target in decode_job parse_config; do
    local log=$repo/fuzz/target/fuzz-$target.log
    if ! wait "${fuzzing[$target]}"; then
      tail -n 80 "$log"
      echo "cargo fuzz found a failure in $target (input in fuzz/artifacts/$target/, log $log)"
      return 1
    fi
    grep -E '^#[0-9]+\s+DONE|^stat::number_of_executed_units' "$log" | sed "s/^/$target: /" || true
  done
}
step "cargo fuzz: decode_job and parse_config, ${FUZZ_SECONDS}s each, in the background (log: target/fuzz.log)"
mkdir -p "$repo/fuzz/target"
fuzz >"$repo/target/fuzz.log" 2>&1 &
fuzzing_all=$!

# The Debian package (issue 14). package.sh --dev renders the man page and completions with
# the tests' dev-profile binary and runs cargo deb around it: the same package as a release
# one, without a second, release build (scripts/package.sh builds that one);
# tests/it/package.rs (in the cargo test below) installs that .deb, checks it and purges it.
CARGO_DEB_VERSION=3.8.0
step "building the Debian package (scripts/package.sh)"
if [[ $(cargo deb --version 2>/dev/null) != "cargo-deb $CARGO_DEB_VERSION" ]]; then
  echo "cargo-deb $CARGO_DEB_VERSION is missing: installing it with cargo install"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
if ! command -v man >/dev/null; then
  echo "man is missing: installing Debian's man-db package with apt-get"
  apt_install --no-install-recommends man-db
fi
for tool in dpkg dpkg-query dpkg-statoverride setpriv pgrep systemd-sysusers chroot mount; do
  command -v "$tool" >/dev/null || die "$tool is missing: tests/it/package.rs needs a Debian system with systemd installed"
done
RQ_RETRYD_DEB=$(./scripts/package.sh --dev | tail -n 1)
export RQ_RETRYD_DEB
echo "built $RQ_RETRYD_DEB"

# The wheel (issue 23; scripts/wheel.sh). --dev: what is checked is the same kind of artifact as
# the release wheel (maturin, zig, the manylinux_2_17 tag, auditwheel), built without optimising.
step "building the wheel (scripts/wheel.sh --dev)"
RQ_RETRYD_WHEEL=$(./scripts/wheel.sh --dev | tail -n 1)
export RQ_RETRYD_WHEEL RQ_RETRYD_VENV_WHEEL=$repo/target/venv-wheel
echo "built $RQ_RETRYD_WHEEL"

step "waiting for cargo fuzz"
if ! wait "$fuzzing_all"; then
  tail -n 100 "$repo/target/fuzz.log"
  die "cargo fuzz failed (log above, in target/fuzz.log)"
fi
grep -E '^(decode_job|parse_config): ' "$repo/target/fuzz.log" || true

step "waiting for the bare Debian 12 (scripts/debian-root.sh)"
if ! wait "$debian_root"; then
  tail -n 40 "$repo/target/debian-root.log"
  die "scripts/debian-root.sh failed (log above, in target/debian-root.log)"
fi
tail -n 2 "$repo/target/debian-root.log"

step "cargo test --all-targets"
cargo test --all-targets

step "all checks passed in $((SECONDS - started))s"

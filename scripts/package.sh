#!/usr/bin/env bash
# Builds the Debian package target/debian/rq-retryd_<version>-1_<arch>.deb (deploy/README.md).
#
#   ./scripts/package.sh          needs cargo-deb: cargo install cargo-deb --locked
#   ./scripts/package.sh --dev    what CI builds (scripts/test.sh): the same package around the
#                                 dev-profile binary the tests were built with (no second,
#                                 release build: about 2.5 minutes less on 2 cores). cargo-deb
#                                 3.8 warns that a dev profile will be refused some day; the
#                                 pinned version takes it. Never ship it: it is unoptimised.
#
# Steps, and why:
#   1. cargo build --release: the binary the package ships. Without debug info
#      (CARGO_PROFILE_RELEASE_DEBUG=false): Cargo.toml keeps debug = 1 for profiling, which
#      would make the packaged binary several times larger; panics still name their functions.
#      With --dev: cargo build --all-targets, the tests' own build (a no-op after it), so the
#      binary is the one the tests ran. A build of the binary alone is not: without the tests,
#      the dev-dependencies' features (tokio's test-util, hyper-util's client) are left out and
#      tokio's whole tree compiles a second time (about 75 s of CI's .deb step on 2 cores).
#      cargo deb strips the binary, and compresses fast (--fast: gzip instead of xz, 4 s
#      against 19 s; the package is only installed by the tests).
#   2. That binary renders the man page and the bash, zsh and fish completions into
#      target/assets/ (`rq-retryd generate`, from the clap definitions, so they match the
#      flags of the binary they ship with).
#   3. The unit files are copied into target/assets/systemd with ExecStart=/usr/bin/rq-retryd,
#      where the package puts the binary (deploy/systemd says /usr/local/bin, where the manual
#      install puts it); the script fails if that line is not there to rewrite.
#   4. cargo deb --no-build packages it all per [package.metadata.deb] in Cargo.toml.
# Prints the path of the .deb as its last line.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "error: $*" >&2; exit 1; }
command -v cargo-deb >/dev/null || die "cargo-deb is missing: cargo install cargo-deb --locked"

case ${1:-} in
  "") profile=release ;;
  --dev) profile=dev ;;
  *) die "usage: $0 [--dev]" ;;
esac
deb_args=()
if [[ $profile == release ]]; then
  export CARGO_PROFILE_RELEASE_DEBUG=false
  cargo build --release --locked --bin rq-retryd
  binary=target/release/rq-retryd
else
  cargo build --locked --all-targets
  binary=target/debug/rq-retryd
  deb_args=(--fast)
fi

assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/systemd"
"$binary" generate man >"$assets/rq-retryd.1"
"$binary" generate completions bash >"$assets/completions/rq-retryd.bash"
"$binary" generate completions zsh >"$assets/completions/_rq-retryd"
"$binary" generate completions fish >"$assets/completions/rq-retryd.fish"

for unit in rq-retryd.service rq-retryd@.service; do
  source_unit=deploy/systemd/$unit
  grep -q '^ExecStart=/usr/local/bin/rq-retryd ' "$source_unit" \
    || die "$source_unit: no 'ExecStart=/usr/local/bin/rq-retryd ' line to point at /usr/bin"
  sed 's|^ExecStart=/usr/local/bin/rq-retryd |ExecStart=/usr/bin/rq-retryd |' \
    "$source_unit" >"$assets/systemd/$unit"
done
cp deploy/systemd/rq-retryd.sysusers "$assets/systemd/rq-retryd.sysusers"

cargo deb --no-build --locked --profile "$profile" "${deb_args[@]}" >&2
version=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["packages"][0]["version"])')
deb=$(ls -t target/debian/rq-retryd_"$version"-*.deb 2>/dev/null | head -n 1)
[[ -n $deb ]] || die "cargo deb wrote no target/debian/rq-retryd_$version-*.deb"
echo "$(pwd)/$deb"

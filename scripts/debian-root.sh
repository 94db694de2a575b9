#!/usr/bin/env bash
# Builds (once) the bare Debian 12 that tests/it/package.rs installs the .deb into, as a tarball
# under target/debian-root/, and prints its path as the last line.
#
#   ./scripts/debian-root.sh        reuse the tarball when it is there and fresh, else build it
#
# Why: `debootstrap --variant=minbase bookworm` takes about 90 s (Debian's mirror, dpkg), most of
# the package test's time, and the root it makes is the same every run. So it is made once and
# kept as an artefact; the test extracts it into a new directory each run, so every run still
# starts from a bare system that nothing has touched. scripts/test.sh starts this script in the
# background at its start (it overlaps clippy and the build) and waits for it before
# `cargo test`; the test runs it itself too, so without a tarball it builds one (never a skip).
#
# The tarball's name is its key: suite, variant, architecture and a hash of the mirror URL.
# One older than RQ_RETRYD_DEBIAN_ROOT_MAX_DAYS (default 7) is rebuilt, so the bare system
# follows Debian's point releases. A lock (flock) serialises concurrent callers: the second
# waits for the first's tarball instead of bootstrapping a second time. Needs root (as
# debootstrap does); written atomically (a rename), so a half-built tarball is never used.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "error: $*" >&2; exit 1; }
command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"

suite=bookworm
variant=minbase
mirror=http://deb.debian.org/debian
arch=$(dpkg --print-architecture)
max_days=${RQ_RETRYD_DEBIAN_ROOT_MAX_DAYS:-7}
key=$(printf '%s' "$mirror" | sha256sum | cut -c1-12)
dir=$(pwd)/target/debian-root
tarball=$dir/$suite-$variant-$arch-$key.tar

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9

if [[ -f $tarball && -z $(find "$tarball" -mmin "+$((max_days * 24 * 60))") ]]; then
  echo "reusing $tarball"
  echo "$tarball"
  exit 0
fi

build=$(mktemp -d "$dir/build.XXXXXX")
cleanup() {
  # debootstrap mounts /proc and /sys in the root while it works; never rm -rf through a mount.
  grep -o " $build/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$build"
}
trap cleanup EXIT
echo "debootstrap --variant=$variant $suite ($arch, $mirror) into $build/root"
started=$SECONDS
debootstrap --variant="$variant" --arch="$arch" "$suite" "$build/root" "$mirror" >"$build/debootstrap.log" 2>&1 ||
  { tail -n 40 "$build/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
# Numeric owners and extended attributes (file capabilities), so the extracted root is the one
# debootstrap made; device nodes and modes come along with tar's defaults as root.
tar --numeric-owner --xattrs --xattrs-include='*' -C "$build/root" -cf "$build/root.tar" .
mv "$build/root.tar" "$tarball"
find "$dir" -maxdepth 1 -name "*.tar" ! -path "$tarball" -delete
echo "built $tarball in $((SECONDS - started))s"
echo "$tarball"

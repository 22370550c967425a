#!/usr/bin/env bash
# Builds a release tarball: dist/hoard-<version>-<arch>-linux.tar.gz with the stripped
# binary, the deployment files (compose, systemd units, Grafana dashboard, Prometheus
# rules, Containerfile and scripts/image.sh), README and docs, plus dist/SHA256SUMS.
#
# Usage: ./scripts/release.sh [--binary PATH] [--out DIR]
#   --binary PATH   package this binary instead of `cargo build --release --locked`
#   --out DIR       where the tarball and SHA256SUMS go (default dist/)
#
# The version is Cargo.toml's; the commit (also printed by `hoard --version`) is
# recorded in the tarball's VERSION file. Check a download with `sha256sum -c SHA256SUMS`.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
out="dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "release.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "release.sh: no version in Cargo.toml" >&2; exit 1; }
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ -z "$binary" ]; then
  echo "== cargo build --release"
  HOARD_GIT_COMMIT="$commit" cargo build --release --locked
  binary="${CARGO_TARGET_DIR:-target}/release/hoard"
fi
[ -x "$binary" ] || { echo "release.sh: $binary is not an executable" >&2; exit 1; }
reported=$("$binary" --version)
case "$reported" in
  *"$version"*) ;;
  *) echo "release.sh: $binary reports '$reported', not version $version" >&2; exit 1 ;;
esac

name="hoard-$version-$(uname -m)-linux"
stage="$(mktemp -d "${TMPDIR:-/tmp}/hoard-release.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir/bin" "$dir/docs" "$dir/scripts"
objcopy --strip-all "$binary" "$dir/bin/hoard" 2>/dev/null \
  || { cp "$binary" "$dir/bin/hoard"; strip "$dir/bin/hoard"; }
chmod 0755 "$dir/bin/hoard"
cp -r deploy "$dir/deploy"
cp Containerfile README.md "$dir/"
cp scripts/image.sh "$dir/scripts/"
cp docs/*.md docs/*.png "$dir/docs/"
printf 'hoard %s\ncommit %s\n%s\n' "$version" "$commit" "$reported" >"$dir/VERSION"

mkdir -p "$out"
tarball="$name.tar.gz"
# Same inputs, same bytes: sorted names, fixed owners, mtimes of the commit.
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
  -C "$stage" -cf - "$name" | gzip -n -9 >"$out/$tarball"
(cd "$out" && sha256sum "$tarball" >SHA256SUMS && sha256sum -c --quiet SHA256SUMS)
echo "$out/$tarball"
echo "$out/SHA256SUMS"

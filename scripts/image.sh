#!/usr/bin/env bash
# Builds the container image localhost/hoard:latest offline, FROM scratch (no registry
# is needed or reachable): the stripped release binary, the shared libraries `ldd`
# lists for it, and a CA bundle. See docs/OPERATIONS.md ("Container image").
#
# Usage: ./scripts/image.sh [--binary PATH] [--tag TAG]
#   --binary PATH   package this binary instead of building `cargo build --release`
#                   (the tests package their own debug binary this way)
#   --tag TAG       image name (default localhost/hoard:latest; HOARD_IMAGE also sets it)
#
# Podman on hosts like ours needs `--runtime runc` (crun is missing or fails there):
# set PODMAN_RUNTIME to use another. Running the image may also need
# `default_ulimits = []` under [containers] in /etc/containers/containers.conf (the
# host refuses the default nofile limit); this script warns when that is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
tag="${HOARD_IMAGE:-localhost/hoard:latest}"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
runtime="${PODMAN_RUNTIME:-runc}"
command -v podman >/dev/null || { echo "image.sh: podman is not installed (apt-get install podman runc)" >&2; exit 1; }

if [ -z "$binary" ]; then
  echo "== cargo build --release"
  cargo build --release --locked
  binary="${CARGO_TARGET_DIR:-target}/release/hoard"
fi
[ -x "$binary" ] || { echo "image.sh: $binary is not an executable" >&2; exit 1; }

ctx="$(mktemp -d "${TMPDIR:-/tmp}/hoard-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$ctx/data"
chmod 1777 "$root/tmp"

# The binary, without symbols (the release profile keeps line tables: ~10x smaller).
objcopy --strip-all "$binary" "$root/usr/local/bin/hoard" 2>/dev/null \
  || { cp "$binary" "$root/usr/local/bin/hoard"; strip "$root/usr/local/bin/hoard"; }

# Every shared library it loads, and the dynamic loader, at the same paths.
libs=$(ldd "$binary" | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}')
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# A CA bundle: reqwest's rustls loads the platform roots at start and refuses to
# run with none (volumes over HTTPS with --tls-ca do not need it, but start does).
ca=""
for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  [ -s "$f" ] && { ca="$f"; break; }
done
[ -n "$ca" ] || { echo "image.sh: no CA bundle on this host (apt-get install ca-certificates)" >&2; exit 1; }
cp -L "$ca" "$root/etc/ssl/certs/ca-certificates.crt"

# Names for the unprivileged user the image runs as (logs and `id` show them).
printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/data:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

cp Containerfile "$ctx/Containerfile"
echo "== podman build $tag ($(du -sh "$root" | cut -f1) staged: binary + $(echo "$libs" | wc -w) libraries + CA bundle)"
podman --runtime "$runtime" build --quiet --runtime "$runtime" -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null

conf="${CONTAINERS_CONF:-/etc/containers/containers.conf}"
if [ -f "$conf" ] && grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=[[:space:]]*\[[[:space:]]*\]' "$conf"; then
  :
else
  echo "note: if 'podman run' fails setting rlimits on this host, add default_ulimits = [] under [containers] in /etc/containers/containers.conf" >&2
fi
echo "$tag"

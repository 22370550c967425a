#!/usr/bin/env bash
# Runs every check and test hoard has, installing what is missing on a fresh machine.
# Usage: ./scripts/test.sh            (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: nginx (the contract also runs against stock nginx
# WebDAV volumes), promtool from Debian's prometheus package (metrics validity), and
# headless Chromium with its WebDriver (tests/dashboard.rs drives the web dashboard).
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# Real S3 clients for tests/s3.rs: s3cmd and rclone from Debian, curl for presigned
# URLs, Python for boto3 and aws-cli (from PyPI, below).
command -v s3cmd >/dev/null 2>&1 || missing+=(s3cmd)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
# The nemesis suite (tests/nemesis.rs): network namespaces and iptables rules of its
# own, index clocks skewed with libfaketime.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(libfaketime)
# Deployment checks: podman + runc for the container image and the compose cluster
# (tests/compose.rs; HOARD_SKIP_CONTAINERS=1 skips it), systemd-analyze for the unit
# files (tests/deploy.rs).
command -v podman >/dev/null 2>&1 || missing+=(podman netavark aardvark-dns uidmap slirp4netns)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# boto3 and aws-cli from PyPI when missing (Debian's python refuses a system-wide pip
# install without --break-system-packages; a user install is enough).
if ! python3 -c 'import boto3' >/dev/null 2>&1 || ! command -v aws >/dev/null 2>&1; then
  echo "== installing boto3 awscli (pip)"
  python3 -m pip install -q --user boto3 awscli 2>/dev/null \
    || python3 -m pip install -q --user --break-system-packages boto3 awscli
  export PATH="$HOME/.local/bin:$PATH"
fi
# podman-compose from PyPI (Debian's is older than the 1.6 the compose file is tested with).
if ! command -v podman-compose >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/podman-compose" ]; then
  echo "== installing podman-compose (pip)"
  python3 -m pip install -q --user 'podman-compose>=1.6' 2>/dev/null \
    || python3 -m pip install -q --user --break-system-packages 'podman-compose>=1.6'
fi
export PATH="$HOME/.local/bin:$PATH"
# The distributions' services are not needed (tests start their own servers).
if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx prometheus >/dev/null 2>&1 || true; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked

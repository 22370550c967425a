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
# curl and python3: scripts/bench-scale.sh, run at a smoke size by tests/scale.rs.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distributions' services are not needed (tests start their own servers).
if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx prometheus >/dev/null 2>&1 || true; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked

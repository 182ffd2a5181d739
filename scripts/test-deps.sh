#!/usr/bin/env bash
# Installs what the test suite needs beyond Go, idempotently: a fast no-op when all is there.
# `make test` runs it first; CI runs `make test` on a machine that may be new.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)              # the status page test (headless)
command -v systemd-analyze >/dev/null || need+=(systemd)  # the unit's verify/security tests
command -v gcc >/dev/null || need+=(gcc libc6-dev)          # the C API's example and checks
command -v valgrind >/dev/null || need+=(valgrind)          # the C example under memcheck
[ -r /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)  # the container image's root (DaemonSet test)
command -v lintian >/dev/null || need+=(lintian)            # make package: lintian on the .deb
command -v rpm >/dev/null || need+=(rpm)                    # make package: the .rpm read with rpm -qp
command -v groff >/dev/null || need+=(groff-base)           # the man page test (groff -ww)
command -v man >/dev/null || need+=(man-db)                 # the man page test (man -l)
command -v npm >/dev/null || need+=(npm)                    # axe-core for the status page test (below)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need[*]}; run as root to install them (tests that need them skip)" >&2
  else
    echo "test-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
# axe-core, the accessibility check the status page test runs in Chromium: pinned, into
# .cache/npm, nothing fetched when the tests run.
axe_version=4.11.0
axe_dir=.cache/npm/node_modules/axe-core
if ! grep -qs "\"version\": \"$axe_version\"" "$axe_dir/package.json"; then
  if command -v npm >/dev/null; then
    echo "test-deps: installing axe-core $axe_version into .cache/npm"
    npm install --prefix .cache/npm --no-audit --no-fund --no-save --silent "axe-core@$axe_version"
  else
    echo "test-deps: npm missing; the status page test's accessibility check needs axe-core" >&2
  fi
fi
for s in scripts/qemu-deps.sh scripts/prometheus-deps.sh; do
  if [ -f "$s" ]; then bash "$s"; fi
done

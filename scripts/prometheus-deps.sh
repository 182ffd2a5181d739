#!/usr/bin/env bash
# Installs Debian's prometheus package (prometheus and promtool) for the tests of deploy/.
# Idempotent: a no-op when both commands are already there. The package's own service is
# stopped and disabled: the tests start their own server on a free loopback port with a
# temporary data directory, and a system one would only take CPU and port 9090.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "prometheus-deps: prometheus/promtool missing and not root; the deploy tests will skip (or fail with CI=true)" >&2
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -o DPkg::Lock::Timeout=600 -qq "$@"; }
# --no-install-recommends: no node_exporter, nothing the tests do not use.
if ! apt_get install --no-install-recommends prometheus >/dev/null; then
	apt_get update
	apt_get install --no-install-recommends prometheus >/dev/null
fi

if [ -d /run/systemd/system ]; then
	systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
	invoke-rc.d prometheus stop >/dev/null 2>&1 || true
	update-rc.d prometheus disable >/dev/null 2>&1 || true
fi

prometheus --version 2>&1 | head -n1

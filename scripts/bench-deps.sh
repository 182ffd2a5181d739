#!/usr/bin/env bash
# bench-deps.sh: installs what `make bench` (bench/run.sh) needs beyond Go, from Debian's packages,
# and does nothing when it is all there.
#
#   - a C compiler and the static C library: the stamp helper (bench/stamp/stamp.c) is built
#     static, so that its own start-up is as short as a program's can be;
#   - systemd-udevd, from Debian's `udev` package: the latency benchmark runs it beside the agent,
#     in a private mount and network namespace with only its own rule. Installing the package must
#     not start udevd as a service on this machine: the install runs under a policy-rc.d that
#     forbids starting services (Debian's own mechanism; invoke-rc.d and deb-systemd-invoke obey
#     it), unless one is already there;
#   - unshare(1) and mount(8), from util-linux and mount (always there on Debian);
#   - QEMU and a guest kernel for the QEMU benchmark: scripts/qemu-deps.sh, when it exists.
#
# Installing needs root; so does running the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

say() { echo "bench-deps: $*"; }

need=()
command -v cc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/libc.a ] || need+=(libc6-dev)
[ -x /lib/systemd/systemd-udevd ] || need+=(udev)
command -v unshare >/dev/null || need+=(util-linux)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		say "missing ${need[*]}; run as root to install them" >&2
		exit 1
	fi
	say "installing ${need[*]}"
	policy=/usr/sbin/policy-rc.d
	made_policy=
	if [ ! -e "$policy" ]; then
		# Exit status 101: "action forbidden by policy". Removed again below.
		printf '#!/bin/sh\nexit 101\n' > "$policy"
		chmod 0755 "$policy"
		made_policy=1
	fi
	trap 'if [ -n "$made_policy" ]; then rm -f "$policy"; fi' EXIT
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	if pgrep -x systemd-udevd >/dev/null; then
		say "warning: a systemd-udevd runs on this machine (started before, or by its init); the benchmark's own udevd runs apart from it, in its own namespaces" >&2
	fi
fi

if [ -f scripts/qemu-deps.sh ]; then
	bash scripts/qemu-deps.sh || say "QEMU or its guest kernel could not be installed: the QEMU benchmark will be skipped" >&2
fi

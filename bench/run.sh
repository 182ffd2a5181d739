#!/usr/bin/env bash
# run.sh: every benchmark of BENCHMARKS.md, then the figures in BENCHMARKS.md rewritten from them.
# `make bench` runs it. Needs root (uevent files under /sys, udevd in private namespaces). All but
# `planner` and `onlining` take about four minutes, a minute of it the idle window of the
# footprint; `planner` (the zone planner's growth sequence at the larger size, three QEMU guests)
# about ten minutes more, and `onlining` (memory hot-adds of 8 and 32 GiB into QEMU guests under
# three onliners, three runs each) about 20 minutes.
#
#   bash bench/run.sh                       all of them
#   bash bench/run.sh latency storm         some: pipeline latency storm footprint qemu planner onlining (then the report)
#
# planner writes its table to $BENCH_OUT/planner.md for BENCHMARKS.md, "Zone planner".
#
# Environment:
#   BENCH_OUT         where results go (default .cache/bench; the report reads them all, so a
#                     partial run rewrites only its own figures)
#   BENCH_REVISION    what the figures are of (default: git rev-parse --short HEAD, -dirty with changes
#                     to any tracked file but BENCHMARKS.md)
#   BENCH_ONLINING_RUNS  runs of each hot-add and onliner in `onlining` (default 3; the median is reported)
#   BENCH_QUIET_LOAD  wait (up to BENCH_QUIET_WAIT seconds, default 1800) for the 1-minute load
#                     average to fall below this before starting, e.g. 0.3
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-.cache/bench}
all=(pipeline latency storm footprint qemu planner onlining)
which=("$@")
[ ${#which[@]} -gt 0 ] || which=("${all[@]}")

bash scripts/bench-deps.sh
mkdir -p "$out"
if [ -z "${BENCH_REVISION:-}" ] && rev=$(git rev-parse --short HEAD 2>/dev/null); then
	# BENCHMARKS.md is what the report writes: a change there is not a change of what is measured.
	[ -z "$(git status --porcelain --untracked-files=no -- . ':!BENCHMARKS.md' 2>/dev/null)" ] || rev="$rev-dirty"
	export BENCH_REVISION=$rev
fi
cc -O2 -static -s -o "$out/stamp" bench/stamp/stamp.c
${MAKE:-make} --no-print-directory build
go build -o "$out/hotplug-bench" ./bench/cmd/hotplug-bench
hb=$out/hotplug-bench

if [ -n "${BENCH_QUIET_LOAD:-}" ]; then
	deadline=$(( $(date +%s) + ${BENCH_QUIET_WAIT:-1800} ))
	while awk -v max="$BENCH_QUIET_LOAD" '{ exit !($1 >= max) }' /proc/loadavg; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "bench: load still $(cut -d' ' -f1-3 /proc/loadavg); going on anyway (the load is recorded with each figure)"
			break
		fi
		sleep 10
	done
fi

for b in "${which[@]}"; do
	echo "== $b ($(uptime))"
	case $b in
	pipeline)  "$hb" pipeline -out "$out" ;;
	latency)   "$hb" latency -out "$out" -stamp "$out/stamp" ;;
	storm)     "$hb" storm -out "$out" -agent bin/hotplug-agent ;;
	footprint) "$hb" footprint -out "$out" -agent bin/hotplug-agent ;;
	qemu)      "$hb" qemu -out "$out" || echo "bench: the QEMU benchmark failed; its figures are left as they were" ;;
	planner)   HOTPLUG_PLANNER_GROWTH=bench HOTPLUG_PLANNER_TABLE="$(realpath -m "$out/planner.md")" \
		go test -count=1 -timeout 60m -run '^TestIntegrationZonePlanner$' -v ./e2e/ >"$out/planner.log" 2>&1 ||
		echo "bench: the zone planner benchmark failed; see $out/planner.log" ;;
	onlining)
		# The end-to-end test of the onlining speed at full size (e2e/onlinespeed_test.go): it
		# boots the systemd guest of scripts/guest-image.sh (built by scripts/qemu-deps.sh).
		HOTPLUG_ONLINE_SPEED=full HOTPLUG_ONLINE_SPEED_RUNS=${BENCH_ONLINING_RUNS:-3} \
			HOTPLUG_ONLINE_SPEED_OUT="$(cd "$out" && pwd)" \
			go test -count=1 -timeout 4h -run '^TestIntegrationOnlineSpeed$' -v ./e2e/ >"$out/onlining.log" 2>&1 ||
			echo "bench: the onlining benchmark failed (see $out/onlining.log); the figures of the runs it finished are reported" ;;
	*) echo "bench: unknown benchmark $b (want: ${all[*]})" >&2; exit 2 ;;
	esac
done
"$hb" report -out "$out" -doc BENCHMARKS.md

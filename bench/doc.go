// Package bench holds the agent's benchmarks and what they share.
//
// The pipeline benchmarks (the agent's own event loop, agent.New and agent.Run, fed kernel
// datagrams from memory instead of the uevent socket) are ordinary Go benchmarks in this package:
// they run only with -bench, never as part of go test ./... . The benchmarks on
// the real kernel (kernel to callback beside systemd-udevd, the uevent storm, the footprint,
// QEMU hotplug) need root and minutes, and are the subcommands of ./bench/cmd/hotplug-bench;
// bench/run.sh runs everything and rewrites the figures in BENCHMARKS.md.
//
// This package provides the pieces both use: latency summaries, a generated sysfs fixture,
// readings of a process's CPU time and memory, and a uevent source that lets the agent take a
// tagged synthetic uevent for a real one.
package bench

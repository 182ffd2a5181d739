// Package e2e holds the QEMU end-to-end tests: real ACPI CPU and memory hotplug in a q35 guest
// under TCG, with the agent as the guest's only service (cmd/hotplug-guest-init is its /init),
// observed through the agent's /events, /interfaces and /metrics over QEMU user networking, the
// way Prometheus scrapes a test VM. scripts/qemu-deps.sh installs QEMU 10 and the guest kernel;
// without them the tests skip, and fail when CI=true.
//
// Scenarios (subtests of TestIntegrationQEMU): coldplug, slow_callback, cpu_hot_add,
// dimm_kernel_online, virtio_mem, hot_remove (guest "kernel-onlines", booted once) and
// dimm_agent_online (guest "agent-onlines"). One alone:
//
//	go test -count=1 -v -run 'TestIntegrationQEMU/cpu_hot_add$' ./e2e/
//
// Each guest's serial console, QMP events, command line and agent config are kept in
// .cache/qemu/artefacts/TestIntegrationQEMU/<guest>/ (or $HOTPLUG_E2E_ARTEFACTS); a failing
// scenario logs the paths and the end of the console. A scenario of TestIntegrationQEMU or
// TestIntegrationQEMUPhases that fails on a guest whose kernel reported a stalled CPU (an RCU
// stall or a soft lockup: a TCG vCPU whose timer stopped firing, seen on a loaded two-core host)
// runs once more on a new guest, and says so on standard error; the second run decides.
// TestIntegrationSystemd does the same with its whole sequence of checks.
//
// TestIntegrationZonePlanner takes three guests under a workload (testdata/memload) through one
// growth sequence of virtio-mem and pc-dimms and back down: with the agent's zone planner, and
// with the kernel's online_movable and auto-movable for comparison (HOTPLUG_PLANNER_GROWTH=bench
// for the larger sequence of `make bench`). TestIntegrationOnlinerCoexistence checks the agent
// beside the kernel's auto-online, and the policy kernel.
//
// TestIntegrationSystemd boots instead a Debian guest with systemd (scripts/guest-image.sh builds
// its disk), installs the agent's package with dpkg and checks the unit as shipped: readiness,
// hot-add under its hardening, the watchdog, stop, a reboot and dpkg --purge. Commands run in the
// guest through qemu-guest-agent; its journal of each boot is kept as journal.txt beside the
// console.
package e2e

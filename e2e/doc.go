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
// scenario logs the paths and the end of the console.
package e2e

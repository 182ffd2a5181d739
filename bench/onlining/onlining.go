// Package onlining holds the results of the onlining speed benchmark: onlining.json, which the
// end-to-end test TestIntegrationOnlineSpeed (e2e/onlinespeed_test.go) writes with
// HOTPLUG_ONLINE_SPEED=full and hotplug-bench's report reads (bench/run.sh onlining runs both).
package onlining

import "time"

// Scenario is one hot-add: what the end-to-end test plugs, and what each Run names.
type Scenario struct {
	Name   string `json:"scenario"` // "pc-dimm 8 GiB"
	Device string `json:"device"`   // "pc-dimm" or "virtio-mem"
	Size   uint64 `json:"size"`     // bytes
}

// Run is one measured hot-add, as onlining.json holds it.
type Run struct {
	Scenario
	Blocks int    `json:"blocks"`
	Mode   string `json:"mode"` // the onliner: "kernel", "udev" or "agent"
	Run    int    `json:"run"`
	// LastBlock and DeviceArrival are from device_add (virtio-mem: the resize) to the last
	// block's arrival and to the device's arrival on /events, read on the host.
	LastBlock     time.Duration `json:"last_block_ns"`
	DeviceArrival time.Duration `json:"device_arrival_ns"`
	// GuestSpan is the guest's clock from the first block's online uevent to the last one's (the
	// read_at of their arrivals).
	GuestSpan time.Duration `json:"guest_span_ns"`
	// DeviceNotifications counts the device's notifications (virtio-mem: an extent announced
	// before the plug ended is removed and announced again).
	DeviceNotifications int `json:"device_notifications"`
	// AgentHWM is the agent's VmHWM at the end, in bytes.
	AgentHWM uint64 `json:"agent_hwm_bytes"`
	// Lost sums the agent's loss counters' growth: netlink overflows, resyncs, rejected uevents,
	// stream subscribers cut.
	Lost       float64 `json:"lost"`
	LoadBefore string  `json:"load_before"`
	LoadAfter  string  `json:"load_after"`
	Date       string  `json:"date"`
}

// Result is onlining.json.
type Result struct {
	Date        string `json:"date"`
	Revision    string `json:"revision"`
	QEMU        string `json:"qemu"`
	GuestKernel string `json:"guest_kernel"`
	BootMemory  string `json:"boot_memory"`
	Runs        []Run  `json:"runs"`
}

package qemu

import "encoding/json"

// HotpluggableCPU is one entry of query-hotpluggable-cpus: a CPU slot, plugged when QOMPath is set.
type HotpluggableCPU struct {
	Type       string   `json:"type"`
	VCPUsCount int      `json:"vcpus-count"`
	Props      CPUProps `json:"props"`
	QOMPath    string   `json:"qom-path,omitempty"`
}

// CPUProps are a CPU slot's topology ids; the ones QEMU gives are the ones device_add needs.
type CPUProps struct {
	NodeID    *int `json:"node-id,omitempty"`
	DrawerID  *int `json:"drawer-id,omitempty"`
	BookID    *int `json:"book-id,omitempty"`
	SocketID  *int `json:"socket-id,omitempty"`
	DieID     *int `json:"die-id,omitempty"`
	ClusterID *int `json:"cluster-id,omitempty"`
	ModuleID  *int `json:"module-id,omitempty"`
	CoreID    *int `json:"core-id,omitempty"`
	ThreadID  *int `json:"thread-id,omitempty"`
}

func (p CPUProps) String() string {
	b, _ := json.Marshal(p)
	return string(b)
}

// Plugged reports whether a CPU occupies the slot.
func (c HotpluggableCPU) Plugged() bool { return c.QOMPath != "" }

// DeviceIs matches a DEVICE_DELETED event of the device with the given id.
func DeviceIs(id string) func(Event) bool {
	return func(e Event) bool {
		var d struct {
			Device string `json:"device"`
		}
		return json.Unmarshal(e.Data, &d) == nil && d.Device == id
	}
}

// OST is the data of an ACPI_DEVICE_OST event: the guest's _OST answer to an ACPI hotplug
// notification.
type OST struct {
	Info struct {
		Device   string `json:"device"`
		Slot     string `json:"slot"`
		SlotType string `json:"slot-type"`
		Source   int    `json:"source"`
		Status   int    `json:"status"`
	} `json:"info"`
}

// OSTFor matches an ACPI_DEVICE_OST event of the device with the given id.
func OSTFor(id string) func(Event) bool {
	return func(e Event) bool {
		var o OST
		return json.Unmarshal(e.Data, &o) == nil && o.Info.Device == id
	}
}

// MemoryDevice is one entry of query-memory-devices: a pc-dimm ("dimm") or a virtio-mem device,
// with where QEMU placed it in the guest's physical address space.
type MemoryDevice struct {
	Type string `json:"type"`
	Data struct {
		ID string `json:"id"`
		// Addr is a pc-dimm's guest physical address; MemAddr a virtio-mem device's region.
		Addr    uint64 `json:"addr"`
		MemAddr uint64 `json:"memaddr"`
		// Size is a pc-dimm's size, or what the guest has plugged into a virtio-mem device.
		Size uint64 `json:"size"`
		Node int    `json:"node"`
	} `json:"data"`
}

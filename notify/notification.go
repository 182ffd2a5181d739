// Package notify holds the device-interface notification model of Windows Plug and Play
// (IoRegisterPlugPlayNotification and IoUnregisterPlugPlayNotification[Ex]) as it applies
// to processors and memory on Linux: the exact GUIDs, the notification structure, and a
// Registry that delivers arrivals and removals to registered callbacks.
package notify

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The GUIDs of the Windows model, with their exact values. They are opaque 128-bit values:
// GUIDDeviceProcessor has non-RFC-4122 variant bits, so nothing here validates variants.
var (
	// GUIDDeviceInterfaceArrival is GUID_DEVICE_INTERFACE_ARRIVAL.
	GUIDDeviceInterfaceArrival = uuid.MustParse("cb3a4004-46f0-11d0-b08f-00609713053f")
	// GUIDDeviceInterfaceRemoval is GUID_DEVICE_INTERFACE_REMOVAL.
	GUIDDeviceInterfaceRemoval = uuid.MustParse("cb3a4005-46f0-11d0-b08f-00609713053f")
	// GUIDDeviceProcessor is GUID_DEVICE_PROCESSOR, the interface class of processors.
	GUIDDeviceProcessor = uuid.MustParse("97fadb10-4e33-40ae-359c-8bef029dbdd0")
	// GUIDDeviceMemory is GUID_DEVICE_MEMORY, the interface class of memory.
	GUIDDeviceMemory = uuid.MustParse("3fd0f03d-92e0-45fb-b75c-5ed8ffb01021")
)

// AllClasses, given as the interface class to Registry.Register, registers for every
// device-interface class. Windows has no such value (it requires a class GUID); it is this
// agent's extension, used by the event stream so that one subscriber sees one ordered sequence.
var AllClasses = uuid.Nil

// ClassName returns the short name of an interface class: "processor", "memory", or the
// GUID's canonical text for any other class.
func ClassName(class uuid.UUID) string {
	switch class {
	case GUIDDeviceProcessor:
		return "processor"
	case GUIDDeviceMemory:
		return "memory"
	case AllClasses:
		return "all"
	}
	return class.String()
}

// ParseClass parses an interface class given as "processor", "memory", or a GUID
// (canonical form, optionally in braces as Windows writes it). The variant bits are not checked.
func ParseClass(s string) (uuid.UUID, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "processor", "cpu", "guid_device_processor":
		return GUIDDeviceProcessor, nil
	case "memory", "guid_device_memory":
		return GUIDDeviceMemory, nil
	}
	t := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "{"), "}")
	if len(t) != 36 {
		return uuid.Nil, fmt.Errorf("interface class %q: want processor, memory or a GUID like %s", s, GUIDDeviceProcessor)
	}
	g, err := uuid.Parse(t)
	if err != nil {
		return uuid.Nil, fmt.Errorf("interface class %q: want processor, memory or a GUID like %s", s, GUIDDeviceProcessor)
	}
	return g, nil
}

// EventName returns "arrival" or "removal" for the device-interface event GUIDs, "query_remove",
// "remove_complete" or "remove_cancelled" for the target-device ones, the GUID's text otherwise.
func EventName(event uuid.UUID) string {
	switch event {
	case GUIDDeviceInterfaceArrival:
		return "arrival"
	case GUIDDeviceInterfaceRemoval:
		return "removal"
	case GUIDTargetDeviceQueryRemove:
		return "query_remove"
	case GUIDTargetDeviceRemoveComplete:
		return "remove_complete"
	case GUIDTargetDeviceRemoveCancelled:
		return "remove_cancelled"
	}
	return event.String()
}

// Interface is one device interface instance: a logical CPU or a memory block, with the
// Linux facts a consumer needs. It is a plain value; copies are independent.
type Interface struct {
	// ClassGUID is GUIDDeviceProcessor or GUIDDeviceMemory.
	ClassGUID uuid.UUID
	// SymbolicLink names the instance as the kernel does: the device's sysfs path, such as
	// /sys/devices/system/cpu/cpu1 or /sys/devices/system/memory/memory32. It is the identity.
	SymbolicLink string
	// Number is the CPU number of a processor or the block index of a memory block.
	Number int
	// Node is the NUMA node, or -1 when the kernel does not say.
	Node int
	// PhysStart and Size are the physical range of a memory block; zero for processors.
	PhysStart uint64
	Size      uint64
	// State is what sysfs said when the interface was last read: "online", "offline" or
	// "going-offline".
	State string
	// Zones is a memory block's valid_zones as read (for an online block, its zone).
	Zones string
	// Device is the id of the memory device (package memdev) a memory block belongs to, such
	// as "PNP0C80:00" or "virtio5", where it is known: /interfaces and `hotplug-agent list`
	// show it. In a memory-device interface it is the device's own id.
	Device string
	// Blocks is set only in a memory-device interface (see FlagMemoryDevices): its memory
	// blocks as a list like "32-35". Then Number is its first block, PhysStart that block's
	// address, and Size the sum of its blocks' sizes.
	Blocks string
}

// IsMemoryDevice reports whether i is a whole memory device rather than one memory block or
// processor.
func (i Interface) IsMemoryDevice() bool { return i.Blocks != "" }

// Less orders interfaces by class name, then number: processors before memory.
func (i Interface) Less(j Interface) bool {
	if i.ClassGUID == j.ClassGUID {
		return i.Number < j.Number
	}
	if ci, cj := ClassName(i.ClassGUID), ClassName(j.ClassGUID); ci != cj {
		return ci > cj // "processor" > "memory": processors first
	}
	return i.Number < j.Number
}

// Cause says why a notification was produced.
type Cause string

// The causes of a notification.
const (
	CauseUevent   Cause = "uevent"   // a kernel uevent for the interface
	CauseExisting Cause = "existing" // IncludeExistingInterfaces at registration
	CauseResync   Cause = "resync"   // a rescan of sysfs after lost events (overflow, SEQNUM gap)
	CauseStartup  Cause = "startup"  // the difference between the last announced state and sysfs at start
)

// Notification is DEVICE_INTERFACE_CHANGE_NOTIFICATION with the Linux details. It is a plain
// value: each callback gets its own copy.
type Notification struct {
	// Version is the structure version; always 1, as in PLUGPLAY_NOTIFICATION_HEADER.
	Version uint16
	// Event is GUIDDeviceInterfaceArrival or GUIDDeviceInterfaceRemoval.
	Event uuid.UUID
	// InterfaceClassGUID is the class of the interface (GUIDDeviceProcessor, GUIDDeviceMemory).
	InterfaceClassGUID uuid.UUID
	// SymbolicLinkName names the interface instance (see Interface.SymbolicLink).
	SymbolicLinkName string
	// Interface holds the Linux details of the instance.
	Interface Interface
	// Seqnum is the kernel SEQNUM of the uevent that caused the notification, 0 if none did.
	Seqnum uint64
	// ReadAt is when that uevent was read off the socket (or when the rescan or registration
	// that produced the notification happened). Dispatch latency is measured from it.
	ReadAt time.Time
	// Cause says what produced the notification.
	Cause Cause
	// ID numbers the notifications the agent publishes, 1, 2, 3, ... across restarts (the
	// registry assigns it). Notifications made for one registration only (existing interfaces,
	// a lagging registration's resynchronisation) have ID 0, except for a durable registration
	// (Registry.RegisterDurable): they take the registry's next ID, which only that registration
	// sees, so that its callback can deduplicate everything it is given again after a restart.
	ID uint64
}

// NewNotification builds the notification of event for iface.
func NewNotification(event uuid.UUID, iface Interface, seqnum uint64, readAt time.Time, cause Cause) Notification {
	return Notification{
		Version:            1,
		Event:              event,
		InterfaceClassGUID: iface.ClassGUID,
		SymbolicLinkName:   iface.SymbolicLink,
		Interface:          iface,
		Seqnum:             seqnum,
		ReadAt:             readAt,
		Cause:              cause,
	}
}

// IsArrival reports whether n is an arrival.
func (n Notification) IsArrival() bool { return n.Event == GUIDDeviceInterfaceArrival }

package callback

import (
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// The notifications the callback tests deliver. This file has no build constraint: the webhook
// tests, which run anywhere, use them too.

func cpuNote() notify.Notification {
	return notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{
		ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu3", Number: 3, Node: 1, State: "online",
	}, 817, time.Now(), notify.CauseUevent)
}

func memNote() notify.Notification {
	return notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, notify.Interface{
		ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: "/sys/devices/system/memory/memory32", Number: 32,
		Node: -1, PhysStart: 32 << 27, Size: 128 << 20,
	}, 900, time.Now(), notify.CauseResync)
}

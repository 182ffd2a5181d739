// Package callback holds the agent's built-in notification callbacks: a structured log line, and
// an exec action that runs a command per notification with the notification in its environment.
package callback

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// Log returns a callback that writes one structured log line per notification. It never fails.
func Log(logger *slog.Logger) notify.Callback {
	return func(ctx context.Context, n notify.Notification, _ any) error {
		attrs := []slog.Attr{
			slog.String("event", notify.EventName(n.Event)),
			slog.String("event_guid", n.Event.String()),
			slog.String("interface_class", notify.ClassName(n.InterfaceClassGUID)),
			slog.String("interface_class_guid", n.InterfaceClassGUID.String()),
			slog.String("symbolic_link", n.SymbolicLinkName),
			slog.Uint64("seqnum", n.Seqnum),
			slog.String("cause", string(n.Cause)),
			slog.Uint64("id", n.ID), // the exec environment's HOTPLUG_ID: a notification given again has the same
		}
		switch {
		case n.Interface.IsMemoryDevice():
			attrs = append(attrs, slog.String("memory_device", n.Interface.Device),
				slog.String("memory_blocks", n.Interface.Blocks),
				slog.String("phys_start", "0x"+strconv.FormatUint(n.Interface.PhysStart, 16)),
				slog.Uint64("size", n.Interface.Size))
		case n.InterfaceClassGUID == notify.GUIDDeviceMemory:
			attrs = append(attrs, slog.Int("memory_block", n.Interface.Number),
				slog.String("phys_start", "0x"+strconv.FormatUint(n.Interface.PhysStart, 16)),
				slog.Uint64("size", n.Interface.Size))
			if n.Interface.Device != "" { // as the exec environment's HOTPLUG_MEMORY_DEVICE
				attrs = append(attrs, slog.String("memory_device", n.Interface.Device))
			}
		default:
			attrs = append(attrs, slog.Int("cpu", n.Interface.Number))
		}
		if n.Interface.Node >= 0 {
			attrs = append(attrs, slog.Int("node", n.Interface.Node))
		}
		logger.LogAttrs(ctx, slog.LevelInfo, "device interface change", attrs...)
		return nil
	}
}

// Env returns the environment an exec callback gets for n: HOTPLUG_EVENT, HOTPLUG_EVENT_GUID,
// HOTPLUG_ID (n.ID: a notification given again has the same), HOTPLUG_SEQNUM, HOTPLUG_CAUSE,
// and the interface's: HOTPLUG_INTERFACE_CLASS,
// HOTPLUG_INTERFACE_CLASS_GUID, HOTPLUG_SYMBOLIC_LINK, HOTPLUG_NODE (when known), and
// HOTPLUG_CPU for a processor or HOTPLUG_MEMORY_BLOCK, HOTPLUG_MEMORY_PHYS_START (0x hex) and
// HOTPLUG_MEMORY_SIZE (bytes) for memory; a memory device has HOTPLUG_MEMORY_DEVICE and
// HOTPLUG_MEMORY_BLOCKS (a list like 32-35) instead of HOTPLUG_MEMORY_BLOCK.
func Env(n notify.Notification) []string {
	env := []string{
		"HOTPLUG_EVENT=" + notify.EventName(n.Event),
		"HOTPLUG_EVENT_GUID=" + n.Event.String(),
		"HOTPLUG_ID=" + strconv.FormatUint(n.ID, 10),
		"HOTPLUG_SEQNUM=" + strconv.FormatUint(n.Seqnum, 10),
		"HOTPLUG_CAUSE=" + string(n.Cause),
	}
	return append(env, interfaceEnv(n.InterfaceClassGUID, n.SymbolicLinkName, n.Interface)...)
}

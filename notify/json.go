package notify

import (
	"encoding/json"

	"github.com/hotplug-agent/hotplug-agent/internal/wire"
)

// wire returns i's JSON form.
func (i Interface) wire() wire.Interface {
	class := i.ClassGUID
	w := wire.Interface{
		InterfaceClass:     ClassName(i.ClassGUID),
		InterfaceClassGUID: &class,
		SymbolicLink:       i.SymbolicLink,
		State:              i.State,
		Zones:              i.Zones,
		MemoryDevice:       i.Device,
		MemoryBlocks:       i.Blocks,
	}
	n := i.Number
	switch i.ClassGUID {
	case GUIDDeviceProcessor:
		w.CPU = &n
	case GUIDDeviceMemory:
		start, size := i.PhysStart, i.Size
		w.PhysStart, w.Size = &start, &size
		if !i.IsMemoryDevice() {
			w.MemoryBlock = &n
		}
	}
	if i.Node >= 0 {
		node := i.Node
		w.Node = &node
	}
	return w
}

// MarshalJSON encodes the interface with the field names of the agent's HTTP API:
// interface_class ("processor", "memory"), interface_class_guid, symbolic_link, cpu or
// memory_block/phys_start/size, node (when known), state, zones, memory_device (the device a
// block belongs to, when known) and, for a memory-device interface, memory_blocks instead of
// memory_block.
func (i Interface) MarshalJSON() ([]byte, error) { return json.Marshal(i.wire()) }

// MarshalJSON encodes the notification as one flat object: id (when not 0), version, event ("arrival",
// "removal"), event_guid, the interface's fields (see Interface.MarshalJSON), seqnum, read_at
// and cause.
func (n Notification) MarshalJSON() ([]byte, error) {
	w := n.Interface.wire()
	event := n.Event
	w.InterfaceClass = ClassName(n.InterfaceClassGUID)
	*w.InterfaceClassGUID = n.InterfaceClassGUID // the copy wire made
	w.SymbolicLink = n.SymbolicLinkName
	return json.Marshal(wire.Notification{
		ID:        n.ID,
		Version:   n.Version,
		Event:     EventName(n.Event),
		EventGUID: &event,
		Interface: w,
		Seqnum:    n.Seqnum,
		ReadAt:    n.ReadAt,
		Cause:     string(n.Cause),
	})
}

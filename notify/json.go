package notify

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// interfaceJSON is the wire form of an Interface, shared by /interfaces, /events and the CLI.
type interfaceJSON struct {
	InterfaceClass     string    `json:"interface_class"`
	InterfaceClassGUID uuid.UUID `json:"interface_class_guid"`
	SymbolicLink       string    `json:"symbolic_link"`
	CPU                *int      `json:"cpu,omitempty"`
	MemoryBlock        *int      `json:"memory_block,omitempty"`
	PhysStart          *uint64   `json:"phys_start,omitempty"`
	Size               *uint64   `json:"size,omitempty"`
	Node               *int      `json:"node,omitempty"`
	State              string    `json:"state,omitempty"`
	Zones              string    `json:"zones,omitempty"`
	MemoryDevice       string    `json:"memory_device,omitempty"`
	MemoryBlocks       string    `json:"memory_blocks,omitempty"`
}

func (i Interface) wire() interfaceJSON {
	w := interfaceJSON{
		InterfaceClass:     ClassName(i.ClassGUID),
		InterfaceClassGUID: i.ClassGUID,
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

// notificationJSON is the wire form of a Notification: the interface's fields and the event's.
type notificationJSON struct {
	ID        uint64    `json:"id,omitempty"`
	Version   uint16    `json:"version"`
	Event     string    `json:"event"`
	EventGUID uuid.UUID `json:"event_guid"`
	interfaceJSON
	Seqnum uint64    `json:"seqnum"`
	ReadAt time.Time `json:"read_at"`
	Cause  Cause     `json:"cause"`
}

// MarshalJSON encodes the notification as one flat object: id (when not 0), version, event ("arrival",
// "removal"), event_guid, the interface's fields (see Interface.MarshalJSON), seqnum, read_at
// and cause.
func (n Notification) MarshalJSON() ([]byte, error) {
	w := n.Interface.wire()
	w.InterfaceClass = ClassName(n.InterfaceClassGUID)
	w.InterfaceClassGUID = n.InterfaceClassGUID
	w.SymbolicLink = n.SymbolicLinkName
	return json.Marshal(notificationJSON{
		ID:            n.ID,
		Version:       n.Version,
		Event:         EventName(n.Event),
		EventGUID:     n.Event,
		interfaceJSON: w,
		Seqnum:        n.Seqnum,
		ReadAt:        n.ReadAt,
		Cause:         n.Cause,
	})
}

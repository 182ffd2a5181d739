// Package wire holds the agent's JSON form of device interfaces and notifications: notify
// encodes it (/interfaces, /events, the CLI) and client decodes it, from the same structs, so
// the two cannot drift apart. Pointers tell a field that is absent from one that is zero.
package wire

import (
	"time"

	"github.com/google/uuid"
)

// Interface is the JSON of a device interface (notify.Interface.MarshalJSON).
type Interface struct {
	InterfaceClass     string     `json:"interface_class"`
	InterfaceClassGUID *uuid.UUID `json:"interface_class_guid"`
	SymbolicLink       string     `json:"symbolic_link"`
	CPU                *int       `json:"cpu,omitempty"`
	MemoryBlock        *int       `json:"memory_block,omitempty"`
	PhysStart          *uint64    `json:"phys_start,omitempty"`
	Size               *uint64    `json:"size,omitempty"`
	Node               *int       `json:"node,omitempty"`
	State              string     `json:"state,omitempty"`
	Zones              string     `json:"zones,omitempty"`
	MemoryDevice       string     `json:"memory_device,omitempty"`
	MemoryBlocks       string     `json:"memory_blocks,omitempty"`
}

// Notification is the JSON of a notification (notify.Notification.MarshalJSON): the event's
// fields and its interface's, in one flat object.
type Notification struct {
	ID        uint64     `json:"id,omitempty"`
	Version   uint16     `json:"version"`
	Event     string     `json:"event"`
	EventGUID *uuid.UUID `json:"event_guid"`
	Interface
	Seqnum uint64    `json:"seqnum"`
	ReadAt time.Time `json:"read_at"`
	Cause  string    `json:"cause"`
}

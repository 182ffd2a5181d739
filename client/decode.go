package client

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/internal/wire"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// wireInterface and wireNotification are the agent's JSON of an interface and a notification.
type (
	wireInterface    wire.Interface
	wireNotification wire.Notification
)

// DecodeInterface decodes one interface as the agent writes it in /interfaces and in a resync
// event (the output of notify.Interface.MarshalJSON). Unknown fields are ignored, so that a newer
// agent may add some; a missing or contradictory field the model needs is an error. It does not
// block and is safe for concurrent use.
func DecodeInterface(b []byte) (notify.Interface, error) {
	var w wireInterface
	if err := json.Unmarshal(b, &w); err != nil {
		return notify.Interface{}, fmt.Errorf("decode interface: %w", err)
	}
	i, err := w.iface()
	if err != nil {
		return notify.Interface{}, fmt.Errorf("decode interface: %w", err)
	}
	return i, nil
}

// DecodeNotification decodes one notification as the agent writes it on /events and as
// notify.Notification.MarshalJSON produces it: MarshalJSON followed by DecodeNotification gives
// back the same notification (ReadAt's monotonic clock reading aside). Unknown fields are
// ignored; a missing or contradictory field the model needs (event, class, symbolic link, the
// CPU number or memory block of those classes) is an error. It does not block and is safe for
// concurrent use.
func DecodeNotification(b []byte) (notify.Notification, error) {
	var w wireNotification
	if err := json.Unmarshal(b, &w); err != nil {
		return notify.Notification{}, fmt.Errorf("decode notification: %w", err)
	}
	n, err := w.notification()
	if err != nil {
		return notify.Notification{}, fmt.Errorf("decode notification: %w", err)
	}
	return n, nil
}

func (w *wireNotification) notification() (notify.Notification, error) {
	if w.Version == 0 {
		return notify.Notification{}, errors.New("no version")
	}
	if w.Version != 1 {
		return notify.Notification{}, fmt.Errorf("version %d: this client knows version 1", w.Version)
	}
	var event uuid.UUID
	switch w.Event {
	case "arrival":
		event = notify.GUIDDeviceInterfaceArrival
	case "removal":
		event = notify.GUIDDeviceInterfaceRemoval
	case "":
		if w.EventGUID == nil {
			return notify.Notification{}, errors.New("no event")
		}
	default:
		return notify.Notification{}, fmt.Errorf("event %q: want arrival or removal", w.Event)
	}
	if w.EventGUID != nil {
		if *w.EventGUID != notify.GUIDDeviceInterfaceArrival && *w.EventGUID != notify.GUIDDeviceInterfaceRemoval {
			return notify.Notification{}, fmt.Errorf("event_guid %s: want %s (arrival) or %s (removal)",
				*w.EventGUID, notify.GUIDDeviceInterfaceArrival, notify.GUIDDeviceInterfaceRemoval)
		}
		if event != uuid.Nil && event != *w.EventGUID {
			return notify.Notification{}, fmt.Errorf("event %q disagrees with event_guid %s", w.Event, *w.EventGUID)
		}
		event = *w.EventGUID
	}
	iface, err := (*wireInterface)(&w.Interface).iface()
	if err != nil {
		return notify.Notification{}, err
	}
	n := notify.NewNotification(event, iface, w.Seqnum, w.ReadAt, notify.Cause(w.Cause))
	n.Version = w.Version
	n.ID = w.ID
	return n, nil
}

func (w *wireInterface) iface() (notify.Interface, error) {
	if w.SymbolicLink == "" {
		return notify.Interface{}, errors.New("no symbolic_link")
	}
	var class uuid.UUID
	switch {
	case w.InterfaceClassGUID != nil:
		class = *w.InterfaceClassGUID
		if class == notify.AllClasses {
			return notify.Interface{}, errors.New("interface_class_guid is the nil GUID")
		}
		if w.InterfaceClass != "" && w.InterfaceClass != notify.ClassName(class) {
			return notify.Interface{}, fmt.Errorf("interface_class %q disagrees with interface_class_guid %s", w.InterfaceClass, class)
		}
	case w.InterfaceClass != "":
		c, err := notify.ParseClass(w.InterfaceClass)
		if err != nil {
			return notify.Interface{}, fmt.Errorf("interface_class: %w", err)
		}
		class = c
	default:
		return notify.Interface{}, errors.New("no interface_class_guid")
	}
	i := notify.Interface{ClassGUID: class, SymbolicLink: w.SymbolicLink, Node: -1, State: w.State, Zones: w.Zones}
	if w.CPU != nil && w.MemoryBlock != nil {
		return notify.Interface{}, errors.New("both cpu and memory_block")
	}
	switch class {
	case notify.GUIDDeviceProcessor:
		if w.CPU == nil {
			return notify.Interface{}, fmt.Errorf("processor %s: no cpu", w.SymbolicLink)
		}
		if w.MemoryBlock != nil || w.PhysStart != nil || w.Size != nil {
			return notify.Interface{}, fmt.Errorf("processor %s: memory fields", w.SymbolicLink)
		}
		i.Number = *w.CPU
	case notify.GUIDDeviceMemory:
		if w.CPU != nil {
			return notify.Interface{}, fmt.Errorf("memory %s: a cpu field", w.SymbolicLink)
		}
		i.Device = w.MemoryDevice
		switch {
		case w.MemoryBlocks != "" && w.MemoryBlock != nil:
			return notify.Interface{}, fmt.Errorf("memory %s: both memory_block and memory_blocks", w.SymbolicLink)
		case w.MemoryBlocks != "":
			blocks, err := sysfs.ParseMemoryBlockList(w.MemoryBlocks, 0)
			if err != nil || len(blocks) == 0 {
				return notify.Interface{}, fmt.Errorf("memory device %s: memory_blocks %q: want a list like 32-35", w.SymbolicLink, w.MemoryBlocks)
			}
			if w.MemoryDevice == "" {
				return notify.Interface{}, fmt.Errorf("memory device %s: no memory_device", w.SymbolicLink)
			}
			i.Number, i.Blocks = blocks[0], sysfs.FormatCPUList(blocks)
		case w.MemoryBlock == nil:
			return notify.Interface{}, fmt.Errorf("memory %s: no memory_block", w.SymbolicLink)
		default:
			i.Number = *w.MemoryBlock
		}
		if w.PhysStart != nil {
			i.PhysStart = *w.PhysStart
		}
		if w.Size != nil {
			i.Size = *w.Size
		}
	default:
		if w.CPU != nil || w.MemoryBlock != nil {
			return notify.Interface{}, fmt.Errorf("class %s: cpu or memory_block given", class)
		}
	}
	if i.Number < 0 {
		return notify.Interface{}, fmt.Errorf("%s: negative number %d", w.SymbolicLink, i.Number)
	}
	if w.Node != nil {
		if *w.Node < 0 {
			return notify.Interface{}, fmt.Errorf("%s: negative node %d", w.SymbolicLink, *w.Node)
		}
		i.Node = *w.Node
	}
	return i, nil
}

// resyncData is the data of an `event: resync`: the agent's position and its active set.
type resyncData struct {
	LastID     *uint64           `json:"last_id"`
	Interfaces []json.RawMessage `json:"interfaces"`
}

// decodeResync decodes a resync event's data into the agent's position and active set.
func decodeResync(b []byte) (uint64, []notify.Interface, error) {
	var r resyncData
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, nil, fmt.Errorf("decode resync: %w", err)
	}
	if r.LastID == nil {
		return 0, nil, errors.New("decode resync: no last_id")
	}
	if r.Interfaces == nil {
		return 0, nil, errors.New("decode resync: no interfaces")
	}
	out := make([]notify.Interface, 0, len(r.Interfaces))
	seen := make(map[string]bool, len(r.Interfaces))
	for k, raw := range r.Interfaces {
		i, err := DecodeInterface(raw)
		if err != nil {
			return 0, nil, fmt.Errorf("decode resync: interface %d: %w", k, err)
		}
		if seen[i.SymbolicLink] {
			return 0, nil, fmt.Errorf("decode resync: %s listed twice", i.SymbolicLink)
		}
		seen[i.SymbolicLink] = true
		out = append(out, i)
	}
	return *r.LastID, out, nil
}

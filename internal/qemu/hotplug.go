//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// HotpluggableCPUs runs query-hotpluggable-cpus.
func (vm *VM) HotpluggableCPUs(ctx context.Context) ([]HotpluggableCPU, error) {
	var cpus []HotpluggableCPU
	err := vm.QMP.Execute(ctx, "query-hotpluggable-cpus", nil, &cpus)
	return cpus, err
}

// FreeCPUSlots returns the slots without a CPU, in the order QEMU lists them reversed (QEMU lists
// the highest socket first): the first is the lowest socket/core/thread.
func (vm *VM) FreeCPUSlots(ctx context.Context) ([]HotpluggableCPU, error) {
	cpus, err := vm.HotpluggableCPUs(ctx)
	if err != nil {
		return nil, err
	}
	var free []HotpluggableCPU
	for i := len(cpus) - 1; i >= 0; i-- {
		if !cpus[i].Plugged() {
			free = append(free, cpus[i])
		}
	}
	return free, nil
}

// AddCPU plugs a CPU with the given device id into slot (device_add with the slot's type and
// topology ids). It returns when QEMU has accepted the command: the guest sees the ACPI
// notification a moment later.
func (vm *VM) AddCPU(ctx context.Context, id string, slot HotpluggableCPU) error {
	args := map[string]any{"driver": slot.Type, "id": id}
	b, _ := json.Marshal(slot.Props)
	var props map[string]any
	_ = json.Unmarshal(b, &props)
	for k, v := range props {
		args[k] = v
	}
	if err := vm.QMP.Execute(ctx, "device_add", args, nil); err != nil {
		return fmt.Errorf("add CPU %s at %s: %w", id, slot.Props, err)
	}
	return nil
}

// DelCPU asks the guest to eject the CPU with device id (device_del) and waits until its slot is
// free in query-hotpluggable-cpus: QEMU sends no DEVICE_DELETED for a CPU's own id, and the guest
// offlines the CPU itself before the eject completes.
func (vm *VM) DelCPU(ctx context.Context, id string) error {
	if err := vm.QMP.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil {
		return fmt.Errorf("device_del CPU %s: %w", id, err)
	}
	path := "/machine/peripheral/" + id
	return poll(ctx, 50*time.Millisecond, func() (bool, error) {
		cpus, err := vm.HotpluggableCPUs(ctx)
		if err != nil {
			return false, err
		}
		for _, c := range cpus {
			if c.QOMPath == path {
				return false, nil
			}
		}
		return true, nil
	}, func() string {
		return fmt.Sprintf("CPU %s's slot to be free in query-hotpluggable-cpus after device_del", id)
	})
}

// AddDIMM hot-adds size bytes as a pc-dimm with device id: object-add of a memory-backend-ram
// "<id>-mem", then device_add pc-dimm. Size must be a multiple of the guest's memory block size
// (128 MiB on x86) for whole blocks to appear. The backend is not reserved (reserve=false,
// MAP_NORESERVE): memory the guest never touches costs the host nothing, so a guest can take
// tens of GiB on a host that could not reserve them.
func (vm *VM) AddDIMM(ctx context.Context, id string, size uint64) error {
	if err := vm.QMP.Execute(ctx, "object-add", map[string]any{"qom-type": "memory-backend-ram", "id": id + "-mem", "size": size, "reserve": false}, nil); err != nil {
		return fmt.Errorf("add DIMM %s: %w", id, err)
	}
	if err := vm.QMP.Execute(ctx, "device_add", map[string]any{"driver": "pc-dimm", "id": id, "memdev": id + "-mem"}, nil); err != nil {
		_ = vm.QMP.Execute(ctx, "object-del", map[string]any{"id": id + "-mem"}, nil)
		return fmt.Errorf("add DIMM %s: %w", id, err)
	}
	return nil
}

// AddDIMMOnNode is AddDIMM into the guest's NUMA node (the machine must declare it with -numa).
func (vm *VM) AddDIMMOnNode(ctx context.Context, id string, size uint64, node int) error {
	if err := vm.QMP.Execute(ctx, "object-add", map[string]any{"qom-type": "memory-backend-ram", "id": id + "-mem", "size": size}, nil); err != nil {
		return fmt.Errorf("add DIMM %s: %w", id, err)
	}
	if err := vm.QMP.Execute(ctx, "device_add", map[string]any{"driver": "pc-dimm", "id": id, "memdev": id + "-mem", "node": node}, nil); err != nil {
		_ = vm.QMP.Execute(ctx, "object-del", map[string]any{"id": id + "-mem"}, nil)
		return fmt.Errorf("add DIMM %s on node %d: %w", id, node, err)
	}
	return nil
}

// MemoryDevice returns QEMU's query-memory-devices entry of the pc-dimm or virtio-mem device id.
func (vm *VM) MemoryDevice(ctx context.Context, id string) (MemoryDevice, error) {
	var devs []MemoryDevice
	if err := vm.QMP.Execute(ctx, "query-memory-devices", nil, &devs); err != nil {
		return MemoryDevice{}, err
	}
	for _, d := range devs {
		if d.Data.ID == id {
			return d, nil
		}
	}
	return MemoryDevice{}, fmt.Errorf("query-memory-devices: no device %s among %d", id, len(devs))
}

// DelDIMM unplugs the pc-dimm with device id and waits for its DEVICE_DELETED (sent once the guest
// has offlined and ejected its blocks), then deletes its memory backend.
func (vm *VM) DelDIMM(ctx context.Context, id string) error {
	sub := vm.QMP.Subscribe()
	if err := vm.QMP.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil {
		return fmt.Errorf("device_del DIMM %s: %w", id, err)
	}
	if _, err := sub.Wait(ctx, "DEVICE_DELETED", DeviceIs(id)); err != nil {
		return fmt.Errorf("DIMM %s: %w", id, err)
	}
	if err := vm.QMP.Execute(ctx, "object-del", map[string]any{"id": id + "-mem"}, nil); err != nil {
		return fmt.Errorf("DIMM %s: %w", id, err)
	}
	return nil
}

// AddVirtioMem hot-plugs a virtio-mem-pci device with id on the PCIe root port bus (e.g. "rp0"),
// backed by a memory-backend-ram "<id>-mem" of maxSize bytes (not reserved, as AddDIMM's), with
// a requested size of 0.
func (vm *VM) AddVirtioMem(ctx context.Context, id, bus string, maxSize uint64) error {
	if err := vm.QMP.Execute(ctx, "object-add", map[string]any{"qom-type": "memory-backend-ram", "id": id + "-mem", "size": maxSize, "reserve": false}, nil); err != nil {
		return fmt.Errorf("add virtio-mem %s: %w", id, err)
	}
	args := map[string]any{"driver": "virtio-mem-pci", "id": id, "memdev": id + "-mem", "bus": bus, "requested-size": 0}
	if err := vm.QMP.Execute(ctx, "device_add", args, nil); err != nil {
		_ = vm.QMP.Execute(ctx, "object-del", map[string]any{"id": id + "-mem"}, nil)
		return fmt.Errorf("add virtio-mem %s: %w", id, err)
	}
	return nil
}

// ResizeVirtioMem sets the requested size of the virtio-mem device id (qom-set requested-size).
// The guest plugs or unplugs memory to match it; watch the device's size with VirtioMemSize.
func (vm *VM) ResizeVirtioMem(ctx context.Context, id string, size uint64) error {
	args := map[string]any{"path": "/machine/peripheral/" + id, "property": "requested-size", "value": size}
	if err := vm.QMP.Execute(ctx, "qom-set", args, nil); err != nil {
		return fmt.Errorf("resize virtio-mem %s to %d: %w", id, size, err)
	}
	return nil
}

// VirtioMemSize returns how much memory the guest has plugged into the virtio-mem device id.
func (vm *VM) VirtioMemSize(ctx context.Context, id string) (uint64, error) {
	var size uint64
	err := vm.QMP.Execute(ctx, "qom-get", map[string]any{"path": "/machine/peripheral/" + id, "property": "size"}, &size)
	return size, err
}

// WaitVirtioMemSize waits until the guest has plugged exactly size bytes into the device id.
func (vm *VM) WaitVirtioMemSize(ctx context.Context, id string, size uint64) error {
	var last uint64
	return poll(ctx, 50*time.Millisecond, func() (bool, error) {
		var err error
		last, err = vm.VirtioMemSize(ctx, id)
		return last == size, err
	}, func() string { return fmt.Sprintf("virtio-mem %s to reach %d bytes plugged (last %d)", id, size, last) })
}

// DelVirtioMem unplugs the virtio-mem device id (its requested size should be 0 and reached),
// waits for DEVICE_DELETED and deletes its backend.
func (vm *VM) DelVirtioMem(ctx context.Context, id string) error {
	sub := vm.QMP.Subscribe()
	if err := vm.QMP.Execute(ctx, "device_del", map[string]any{"id": id}, nil); err != nil {
		return fmt.Errorf("device_del virtio-mem %s: %w", id, err)
	}
	if _, err := sub.Wait(ctx, "DEVICE_DELETED", DeviceIs(id)); err != nil {
		return fmt.Errorf("virtio-mem %s: %w", id, err)
	}
	if err := vm.QMP.Execute(ctx, "object-del", map[string]any{"id": id + "-mem"}, nil); err != nil {
		return fmt.Errorf("virtio-mem %s: %w", id, err)
	}
	return nil
}

// poll calls f every interval until it returns true or an error, or ctx ends; the error then says
// what it waited for.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error), what func() string) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := f()
		if ok {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("waiting for %s: %w", what(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what(), ctx.Err())
		case <-t.C:
		}
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"text/tabwriter"

	"github.com/alecthomas/kingpin/v2"

	"github.com/hotplug-agent/hotplug-agent/headroom"
	"github.com/hotplug-agent/hotplug-agent/memdev"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// listFlags are the flags of `hotplug-agent list`.
type listFlags struct {
	json          *bool
	sysfs, procfs *string
	reserve       *int64
}

// addReserveFlag defines --memory.headroom-reserve-bytes on cmd (run and list).
func addReserveFlag(cmd *kingpin.CmdClause) *int64 {
	return cmd.Flag("memory.headroom-reserve-bytes", "Kernel memory the memory hot-add headroom leaves free for the agent and the system, in bytes.").
		Default(strconv.Itoa(headroom.DefaultReserve)).Int64()
}

// addListFlags defines the flags of list on cmd.
func addListFlags(cmd *kingpin.CmdClause) *listFlags {
	cmd.HelpLong("Print every present CPU and memory block with its state, node, physical range, zones and memory device, " +
		"like lscpu and lsmem together, then the memory hot-add headroom (the largest hot-add whose memmap fits in kernel memory now). " +
		"It reads sysfs and procfs directly: no agent needed.")
	return &listFlags{
		json:    cmd.Flag("json", "Print a JSON array (the fields of /interfaces, with state).").Bool(),
		sysfs:   cmd.Flag("path.sysfs", "sysfs mount point.").Default("/sys").String(),
		procfs:  cmd.Flag("path.procfs", "procfs mount point (its iomem shows virtio-mem devices; meminfo and zoneinfo give the memory hot-add headroom).").Default("/proc").String(),
		reserve: addReserveFlag(cmd),
	}
}

// runList prints every present CPU and memory block with its state, like lscpu and lsmem, then
// (not with --json) the memory hot-add headroom.
func runList(f *listFlags, stdout, stderr io.Writer) error {
	asJSON, sysfsPath, procfsPath := f.json, f.sysfs, f.procfs
	if *f.reserve < 0 {
		return usageError{fmt.Errorf("--memory.headroom-reserve-bytes: %d is negative", *f.reserve)}
	}
	root, err := sysfs.NewFS(*sysfsPath)
	if err != nil {
		return err
	}
	ifaces, err := state.Present(root)
	if err != nil {
		return err
	}
	// The memory device of each block. Without root /proc/iomem shows no addresses: virtio-mem
	// devices are then left out, said on stderr.
	layout, warn, err := memdev.NewReader(root, filepath.Join(*procfsPath, "iomem")).Read()
	if err != nil {
		return err
	}
	if warn != nil {
		fmt.Fprintf(stderr, "hotplug-agent list: %v\n", warn)
	}
	for k, i := range ifaces {
		if i.ClassGUID == notify.GUIDDeviceMemory {
			ifaces[k].Device = layout.DeviceOf(i.Number)
		}
	}
	if *asJSON {
		if ifaces == nil {
			ifaces = []notify.Interface{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ifaces)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tNUMBER\tSTATE\tNODE\tRANGE\tSIZE\tZONES\tDEVICE\tSYMBOLIC LINK")
	for _, i := range ifaces {
		node, rng, size, zones, device := "-", "-", "-", i.Zones, i.Device
		if i.Node >= 0 {
			node = fmt.Sprint(i.Node)
		}
		if i.ClassGUID == notify.GUIDDeviceMemory {
			rng = fmt.Sprintf("0x%016x-0x%016x", i.PhysStart, i.PhysStart+i.Size-1)
			size = fmt.Sprintf("%dM", i.Size>>20)
		}
		if zones == "" {
			zones = "-"
		}
		if device == "" {
			device = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", notify.ClassName(i.ClassGUID), i.Number, i.State, node, rng, size, zones, device, i.SymbolicLink)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	est, err := headroom.New(headroom.Options{ProcPath: *procfsPath, SysPath: *sysfsPath, Reserve: uint64(*f.reserve)}).Estimate()
	if err != nil {
		// A kernel without memory hotplug, or a procfs without zoneinfo: the list stands alone.
		fmt.Fprintf(stderr, "hotplug-agent list: no memory hot-add headroom: %v\n", err)
		return nil
	}
	_, err = fmt.Fprintln(stdout, headroomLine(est))
	return err
}

// headroomLine is list's line of the memory hot-add headroom:
//
//	hot-add headroom: 17664M (138 blocks of 128M): a hot-add takes 16.2M of kernel memory per GiB (memmap from kernel memory); 344M of kernel memory is free above the watermarks, 64M is kept in reserve
func headroomLine(e headroom.Estimate) string {
	perGiB := float64(e.BlockCost) * float64(1<<30) / float64(e.BlockSize)
	where := "memmap from kernel memory"
	if e.MemmapOnMemory.Applies {
		where = "memmap on the added memory"
	}
	return fmt.Sprintf("hot-add headroom: %dM (%d blocks of %dM): a hot-add takes %.1fM of kernel memory per GiB (%s); %dM of kernel memory is free above the watermarks, %dM is kept in reserve",
		e.Headroom>>20, e.Headroom/e.BlockSize, e.BlockSize>>20, perGiB/(1<<20), where, e.Usable>>20, e.Reserve>>20)
}

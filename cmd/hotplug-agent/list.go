package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"

	"github.com/alecthomas/kingpin/v2"

	"github.com/hotplug-agent/hotplug-agent/memdev"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// listFlags are the flags of `hotplug-agent list`.
type listFlags struct {
	json          *bool
	sysfs, procfs *string
}

// addListFlags defines the flags of list on cmd.
func addListFlags(cmd *kingpin.CmdClause) *listFlags {
	cmd.HelpLong("Print every present CPU and memory block with its state, node, physical range, zones and memory device, " +
		"like lscpu and lsmem together. It reads sysfs (and /proc/iomem) directly: no agent needed.")
	return &listFlags{
		json:   cmd.Flag("json", "Print a JSON array (the fields of /interfaces, with state).").Bool(),
		sysfs:  cmd.Flag("path.sysfs", "sysfs mount point.").Default("/sys").String(),
		procfs: cmd.Flag("path.procfs", "procfs mount point (its iomem shows virtio-mem devices).").Default("/proc").String(),
	}
}

// runList prints every present CPU and memory block with its state, like lscpu and lsmem.
func runList(f *listFlags, stdout, stderr io.Writer) error {
	asJSON, sysfsPath, procfsPath := f.json, f.sysfs, f.procfs
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
	return tw.Flush()
}

package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// runList prints every present CPU and memory block with its state, like lscpu and lsmem.
func runList(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print a JSON array (the fields of /interfaces, with state)")
	sysfsPath := fs.String("path.sysfs", "/sys", "sysfs mount point")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	root, err := sysfs.NewFS(*sysfsPath)
	if err != nil {
		return err
	}
	ifaces, err := state.Present(root)
	if err != nil {
		return err
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
	fmt.Fprintln(tw, "CLASS\tNUMBER\tSTATE\tNODE\tRANGE\tSIZE\tZONES\tSYMBOLIC LINK")
	for _, i := range ifaces {
		node, rng, size, zones := "-", "-", "-", i.Zones
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
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", notify.ClassName(i.ClassGUID), i.Number, i.State, node, rng, size, zones, i.SymbolicLink)
	}
	return tw.Flush()
}

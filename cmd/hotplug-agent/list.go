package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/alecthomas/kingpin/v2"

	"github.com/hotplug-agent/hotplug-agent/headroom"
	"github.com/hotplug-agent/hotplug-agent/memdev"
	"github.com/hotplug-agent/hotplug-agent/memrange"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// listFlags are the flags of `hotplug-agent list`.
type listFlags struct {
	json, blocks  *bool
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
	cmd.HelpLong("Print what lscpu and lsmem would put first: the CPUs online and offline by NUMA node, the memory online and offline, " +
		"and the memory blocks merged into ranges of the same state, node, zones and memory device; then the memory hot-add headroom " +
		"(the largest hot-add whose memmap fits in kernel memory now). --blocks prints every CPU and block instead of the ranges. " +
		"States are coloured on a terminal, unless NO_COLOR is set. It reads sysfs and procfs directly: no agent needed.")
	return &listFlags{
		json:    cmd.Flag("json", "Print a JSON array (the fields of /interfaces, with state).").Bool(),
		blocks:  cmd.Flag("blocks", "Print every CPU and memory block, one per line, instead of the summary and the merged ranges.").Bool(),
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
	paint := colours(stdout)
	if *f.blocks {
		err = printBlocks(stdout, ifaces, paint)
	} else {
		err = printSummary(stdout, ifaces, paint)
	}
	if err != nil {
		return err
	}
	est, err := headroom.New(headroom.Options{ProcPath: *procfsPath, SysPath: *sysfsPath, Reserve: uint64(*f.reserve)}).Estimate()
	if err != nil {
		// A kernel without memory hotplug, or a procfs without zoneinfo: the list stands alone.
		fmt.Fprintf(stderr, "hotplug-agent list: no memory hot-add headroom: %v\n", err)
		return nil
	}
	if !*f.blocks {
		fmt.Fprintln(stdout)
	}
	_, err = fmt.Fprintln(stdout, headroomLine(est))
	return err
}

// printBlocks prints every CPU and memory block, one per line (list --blocks).
func printBlocks(w io.Writer, ifaces []notify.Interface, paint painter) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CLASS\tNUMBER\t%s\tNODE\tRANGE\tSIZE\tZONES\tDEVICE\tSYMBOLIC LINK\n", paint.header("STATE"))
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
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", notify.ClassName(i.ClassGUID), i.Number, paint.state(i.State), node, rng, size, zones, device, i.SymbolicLink)
	}
	return tw.Flush()
}

// printSummary prints what lscpu and lsmem put first: the CPU lists (lscpu's labels and
// lists), the memory online and offline, and the memory blocks merged into ranges (lsmem's
// columns RANGE, SIZE, STATE, BLOCK, NODE, ZONES, and DEVICE).
func printSummary(w io.Writer, ifaces []notify.Interface, paint painter) error {
	s := memrange.Summarise(ifaces)
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "CPU(s):\t%d\n", len(s.CPUsPresent))
	fmt.Fprintf(tw, "On-line CPU(s) list:\t%s\n", memrange.CPUList(s.CPUsOnline))
	if len(s.CPUsOffline) > 0 {
		fmt.Fprintf(tw, "Off-line CPU(s) list:\t%s\n", paint.state("offline", memrange.CPUList(s.CPUsOffline)))
	}
	for _, n := range s.Nodes {
		fmt.Fprintf(tw, "NUMA node%d CPU(s):\t%s\n", n, memrange.CPUList(s.NodeCPUs[n]))
	}
	if s.BlockSize > 0 {
		fmt.Fprintf(tw, "Memory block size:\t%s\n", memrange.HumanSize(s.BlockSize))
	}
	fmt.Fprintf(tw, "Total online memory:\t%s (%d blocks)\n", memrange.HumanSize(s.MemoryOnline), s.BlocksOnline)
	fmt.Fprintf(tw, "Total offline memory:\t%s (%d blocks)\n", memrange.HumanSize(s.MemoryOffline), s.BlocksOffline)
	devices := "none"
	if len(s.Devices) > 0 {
		devices = strings.Join(s.Devices, ", ")
	}
	fmt.Fprintf(tw, "Memory devices:\t%s\n", devices)
	if err := tw.Flush(); err != nil {
		return err
	}
	ranges := memrange.Merge(ifaces)
	if len(ranges) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "RANGE\tSIZE\t%s\tBLOCK\tNODE\tZONES\tDEVICE\n", paint.header("STATE"))
	for _, r := range ranges {
		node, device := "-", r.Device
		if r.Node >= 0 {
			node = fmt.Sprint(r.Node)
		}
		if device == "" {
			device = "-"
		}
		fmt.Fprintf(tw, "0x%016x-0x%016x\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Start, r.End, memrange.HumanSize(r.Size()), paint.state(r.State), r.BlockList(), node, r.Zones, device)
	}
	return tw.Flush()
}

// painter colours the states list prints and the lines of monitor, or leaves them plain. Every coloured cell of a
// column gains the same number of invisible bytes, so tabwriter still aligns the column.
type painter struct{ on bool }

// colours returns a painter that colours when w is a terminal and neither NO_COLOR
// (https://no-color.org) nor TERM=dumb says otherwise.
func colours(w io.Writer) painter {
	return painter{on: isTerminal(w) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"}
}

// The SGR sequences: all of the same length, see painter.
const (
	sgrBold   = "\x1b[01m"
	sgrGreen  = "\x1b[32m"
	sgrRed    = "\x1b[31m"
	sgrYellow = "\x1b[33m"
	sgrReset  = "\x1b[0m"
)

// state writes a state (or text standing for it): online green, offline red, going-offline
// yellow.
func (p painter) state(state string, text ...string) string {
	s := state
	if len(text) > 0 {
		s = text[0]
	}
	if !p.on {
		return s
	}
	c := sgrYellow
	switch state {
	case "online":
		c = sgrGreen
	case "offline":
		c = sgrRed
	}
	return c + s + sgrReset
}

// event colours a monitor line: an arrival green, a removal red.
func (p painter) event(line string, arrival bool) string {
	if !p.on {
		return line
	}
	if arrival {
		return sgrGreen + line + sgrReset
	}
	return sgrRed + line + sgrReset
}

// header writes a column title in bold.
func (p painter) header(s string) string {
	if !p.on {
		return s
	}
	return sgrBold + s + sgrReset
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

//go:build linux

package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hotplug-agent/hotplug-agent/bench/onlining"
)

// onliningModes are the onliners in the table's order.
var onliningModes = []string{"kernel", "udev", "agent"}

// onliningCell is the median of one scenario under one onliner.
type onliningCell struct {
	n                  int
	last, dev          time.Duration // medians
	lastMin, lastMax   time.Duration
	hwm                uint64 // the highest
	lost               float64
	notes              int // the most device notifications of one run
	loadMin, loadMax   string
	loadMinV, loadMaxV float64
}

func medianDur(v []time.Duration) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// onliningCells groups the runs by scenario (in the order they first appear) and onliner.
func onliningCells(res *onlining.Result) (scenarios []string, blocks map[string]int, cells map[string]map[string]*onliningCell) {
	type acc struct{ last, dev []time.Duration }
	accs := map[string]map[string]*acc{}
	cells = map[string]map[string]*onliningCell{}
	blocks = map[string]int{}
	for _, r := range res.Runs {
		if _, ok := cells[r.Name]; !ok {
			scenarios = append(scenarios, r.Name)
			cells[r.Name] = map[string]*onliningCell{}
			accs[r.Name] = map[string]*acc{}
		}
		blocks[r.Name] = r.Blocks
		c := cells[r.Name][r.Mode]
		if c == nil {
			c = &onliningCell{loadMinV: 1e9, loadMaxV: -1}
			cells[r.Name][r.Mode] = c
			accs[r.Name][r.Mode] = &acc{}
		}
		a := accs[r.Name][r.Mode]
		a.last = append(a.last, r.LastBlock)
		a.dev = append(a.dev, r.DeviceArrival)
		c.n++
		c.hwm = max(c.hwm, r.AgentHWM)
		c.lost += r.Lost
		c.notes = max(c.notes, r.DeviceNotifications)
		for _, l := range []string{r.LoadBefore, r.LoadAfter} {
			var v float64
			if _, err := fmt.Sscanf(l, "%g", &v); err == nil {
				if v < c.loadMinV {
					c.loadMinV, c.loadMin = v, strings.Fields(l)[0]
				}
				if v > c.loadMaxV {
					c.loadMaxV, c.loadMax = v, strings.Fields(l)[0]
				}
			}
		}
	}
	for s, m := range cells {
		for mode, c := range m {
			a := accs[s][mode]
			c.last, c.dev = medianDur(a.last), medianDur(a.dev)
			c.lastMin, c.lastMax = slices.Min(a.last), slices.Max(a.last)
		}
	}
	return scenarios, blocks, cells
}

// secs formats d in seconds with two decimals.
func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func (r *report) onlining() (string, error) {
	var res onlining.Result
	if err := r.load("onlining", &res); err != nil {
		return "", err
	}
	return renderOnlining(&res), nil
}

func renderOnlining(res *onlining.Result) string {
	scenarios, blocks, cells := onliningCells(res)
	var s strings.Builder
	runs, fewer := 0, false
	for _, m := range cells {
		for _, c := range m {
			fewer = fewer || (runs > 0 && c.n != runs)
			runs = max(runs, c.n)
		}
	}
	each := fmt.Sprintf("%d runs", runs)
	if fewer {
		each += " (fewer where the last table says so: a run that failed is left out)"
	}
	fmt.Fprintf(&s, "%s; guest kernel %s, %s boot memory, one vCPU (TCG); agent at %s; taken %s. Median of %s, a fresh guest each, from QMP `device_add` (virtio-mem: the resize) to the last block's arrival / to the device's arrival on `/events`, read on the host:\n\n",
		res.QEMU, res.GuestKernel, res.BootMemory, res.Revision, res.Date, each)
	var rows [][]string
	for _, sc := range scenarios {
		row := []string{sc, fmt.Sprint(blocks[sc])}
		for _, m := range onliningModes {
			if c := cells[sc][m]; c != nil {
				row = append(row, secs(c.last)+" / "+secs(c.dev))
			} else {
				row = append(row, "")
			}
		}
		k, u, a := cells[sc]["kernel"], cells[sc]["udev"], cells[sc]["agent"]
		if k != nil && a != nil {
			row = append(row, ratio(a.last, k.last)+" / "+ratio(a.dev, k.dev))
		} else {
			row = append(row, "")
		}
		if u != nil && a != nil {
			row = append(row, ratio(u.last, a.last)+" / "+ratio(u.dev, a.dev))
		} else {
			row = append(row, "")
		}
		rows = append(rows, row)
	}
	s.WriteString(table([]string{"hot-add", "blocks", "kernel auto-online (floor)", "udev rule", "agent", "agent / kernel", "udev / agent"}, rows))

	s.WriteString("\nTargets, on the last block online (the device's arrival follows it by the agent's grouping):\n\n")
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	var trows [][]string
	var maxHWM uint64
	var lost float64
	for _, sc := range scenarios {
		k, u, a := cells[sc]["kernel"], cells[sc]["udev"], cells[sc]["agent"]
		if a == nil {
			continue
		}
		if k != nil {
			x := float64(a.last) / float64(k.last)
			trows = append(trows, []string{sc + ": agent within 1.2x of the kernel's auto-online", fmt.Sprintf("%.2fx", x), check(x <= 1.2)})
		}
		if u != nil {
			y := float64(u.last) / float64(a.last)
			trows = append(trows, []string{sc + ": agent at least 5x faster than the udev rule", fmt.Sprintf("%.2fx", y), check(y >= 5)})
		}
		for _, c := range cells[sc] {
			maxHWM = max(maxHWM, c.hwm)
			lost += c.lost
		}
	}
	trows = append(trows,
		[]string{"nothing lost at the default receive buffer (the agent's overflow, resync, rejection and cut-off counters)", fmt.Sprintf("%.0f", lost), check(lost == 0)},
		[]string{"agent's peak RSS (VmHWM) under 30 MiB", fmt.Sprintf("%.1f MiB", float64(maxHWM)/(1<<20)), check(maxHWM < 30<<20)})
	s.WriteString(table([]string{"target", "figure", ""}, trows))

	s.WriteString("\nSpread and conditions per hot-add and onliner: the last block's min to max over the runs, the host's 1-minute load average around them, the most device notifications in one run (virtio-mem: an extent announced while the plug grows is replaced by the next), the agent's VmHWM:\n\n")
	var drows [][]string
	for _, sc := range scenarios {
		for _, m := range onliningModes {
			c := cells[sc][m]
			if c == nil {
				continue
			}
			drows = append(drows, []string{sc, m, fmt.Sprint(c.n), secs(c.lastMin) + " to " + secs(c.lastMax),
				c.loadMin + " to " + c.loadMax, fmt.Sprint(c.notes), fmt.Sprintf("%.1f MiB", float64(c.hwm)/(1<<20))})
		}
	}
	s.WriteString(table([]string{"hot-add", "onliner", "runs", "last block, min to max", "load", "device notifications", "agent VmHWM"}, drows))
	return s.String()
}

package web

import (
	"embed"
	"fmt"
	"html"
	"html/template"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/hotplug-agent/hotplug-agent/memrange"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

//go:embed status.html status.js
var statusFiles embed.FS

// statusPage is the page at /: a summary line, the memory map, the CPUs by node, the
// notifications, the registrations and the charts. Everything but the charts and the live
// updates is rendered here, so the page reads without JavaScript; status.js follows /events
// from where the page's history ends and redraws the rest from / when something changes.
var statusPage = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"hex":   func(v uint64) string { return fmt.Sprintf("0x%016x", v) },
	"human": memrange.HumanSize,
	"add1":  func(i int) int { return i + 1 },
}).ParseFS(statusFiles, "status.html"))

// statusScript is status.js, served at /status.js.
var statusScript, _ = statusFiles.ReadFile("status.js")

// The memory map's geometry, in SVG user units: mapColumns blocks a row (half as many for a
// small machine, so that its map is not a thin line).
const (
	mapColumns   = 64
	mapSmall     = 1024 // blocks up to which a row holds mapColumns/2
	mapCellWidth = 10
	mapMaxHeight = 640 // the map's height beyond which rows get thinner
	recentRows   = 100 // the notifications rendered with the page
)

// pageCPU is a CPU on the page.
type pageCPU struct {
	Number int
	State  string
	Link   string
}

// pageNode is a NUMA node's CPUs.
type pageNode struct {
	Name string
	CPUs []pageCPU
}

// pageRange is a row of the ranges beside the map.
type pageRange struct {
	memrange.Range
	Blocks string
	Node   string
}

// pageNote is a notification row.
type pageNote struct {
	Time, Event, Class, Link, Detail, Cause string
	Seqnum                                  uint64
}

// pageEntry is a registration row.
type pageEntry struct {
	Owner, Kind, What string
	// Queued, Delivered and Dropped are blank for the synchronous kinds.
	Queued, Delivered, Dropped string
	Errors, LastError          string
	Latency                    string // dispatch latency p50 / p99, where measured
}

// chartData is what status.js draws the charts from.
type chartData struct {
	// Start is the first minute (Unix ms) of Counts, Step a bucket's width in ms.
	Start, Step int64
	// Now is when the page was made (Unix ms): the page moves the window on with the agent's
	// clock, not the browser's.
	Now int64
	// Counts are the notifications of the last hour per minute, by "class event".
	Counts map[string][]int
	// Latency is each callback's dispatch latency now (cumulative since start), in seconds.
	Latency map[string][3]float64
}

// pageData is what the template renders.
type pageData struct {
	Version, Error string
	// The summary.
	CPUs, Memory, Devices, Headroom, Errors, Health, LastArrival string
	Adding                                                       string // a two-phase add in progress
	Healthy                                                      bool
	MapSVG                                                       template.HTML
	MapBlocks                                                    []mapBlockRange
	Ranges                                                       []pageRange
	DeviceList                                                   []string
	Nodes                                                        []pageNode
	Notes                                                        []pageNote
	LastID                                                       uint64
	Entries                                                      []pageEntry
	Chart                                                        chartData
	// MemoryDevices are the memory devices announced as present; HasDevices says whether the
	// agent follows them.
	MemoryDevices []pageDevice
	HasDevices    bool
}

// pageDevice is a memory device's row.
type pageDevice struct {
	notify.Interface
	Number int // its number on the map, 0 when it is not drawn
}

// mapBlockRange is a range as status.js names a block under the pointer.
type mapBlockRange struct {
	First int    `json:"f"`
	Last  int    `json:"l"`
	Label string `json:"s"` // "online, Normal, node 0, device virtio5"
	Start uint64 `json:"a"`
	Size  uint64 `json:"z"` // of one block
}

// gib writes bytes in GiB with one decimal.
func gib(b uint64) string { return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) + " GiB" }

func (s *server) script(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	_, _ = w.Write(statusScript)
}

func (s *server) index(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	page := pageData{Version: s.o.Version, Health: "ok", Healthy: true}
	if s.o.Healthy != nil {
		if err := s.o.Healthy(); err != nil {
			page.Health, page.Healthy = "unhealthy: "+err.Error(), false
		}
	}
	present := s.o.Registry.Active()
	if s.o.Present != nil {
		var err error
		if present, err = s.o.Present(); err != nil {
			page.Error = err.Error()
		}
	}
	// A two-phase add in progress: the registrations were asked, the CPU or block is not
	// online yet.
	var adding notify.Interface
	if s.o.Changes != nil {
		if i, ok := s.o.Changes.Adding(); ok {
			adding = i
			if i.ClassGUID == notify.GUIDDeviceProcessor {
				page.Adding = "cpu" + strconv.Itoa(i.Number) + " (two-phase add: asked the registrations, onlining)"
			} else {
				page.Adding = "memory" + strconv.Itoa(i.Number) + " (two-phase add: asked the registrations, onlining)"
			}
		}
	}
	var blocks []notify.Interface
	nodes := map[int]*pageNode{}
	for k, i := range present {
		if i.ClassGUID == notify.GUIDDeviceMemory {
			if s.o.DeviceOf != nil {
				i.Device = s.o.DeviceOf(i.Number)
				present[k].Device = i.Device // for the summary's count
			}
			blocks = append(blocks, i)
			continue
		}
		n := nodes[i.Node]
		if n == nil {
			name := "node " + strconv.Itoa(i.Node)
			if i.Node < 0 {
				name = "node unknown"
			}
			n = &pageNode{Name: name}
			nodes[i.Node] = n
		}
		state := i.State
		if adding.SymbolicLink == i.SymbolicLink {
			state = "adding"
		}
		n.CPUs = append(n.CPUs, pageCPU{i.Number, state, i.SymbolicLink})
	}
	for _, k := range slices.Sorted(maps.Keys(nodes)) {
		page.Nodes = append(page.Nodes, *nodes[k])
	}

	sum := memrange.Summarise(present)
	page.CPUs = fmt.Sprintf("%d/%d online", len(sum.CPUsOnline), len(sum.CPUsPresent))
	page.Memory = fmt.Sprintf("%s online (%d blocks), %s offline (%d blocks)", gib(sum.MemoryOnline), sum.BlocksOnline,
		gib(sum.MemoryOffline), sum.BlocksOffline)
	page.Devices = "none"
	if len(sum.Devices) > 0 {
		page.Devices = strconv.Itoa(len(sum.Devices))
	}
	page.Headroom = "not estimated"
	if s.o.Memory != nil {
		if e, err := s.o.Memory(); err != nil {
			page.Headroom = "unknown: " + err.Error()
		} else {
			page.Headroom = fmt.Sprintf("%s (%d blocks of %d MiB)", gib(e.Headroom), e.Headroom/e.BlockSize, e.BlockSize>>20)
		}
	}
	page.Errors = "not counted"
	if s.o.Errors != nil {
		n, more := s.o.Errors.Since(now.Add(-time.Hour))
		page.Errors = strconv.Itoa(n)
		if more {
			page.Errors = "over " + page.Errors
		}
	}

	ranges := memrange.Merge(blocks)
	for _, r := range ranges {
		node := "-"
		if r.Node >= 0 {
			node = strconv.Itoa(r.Node)
		}
		page.Ranges = append(page.Ranges, pageRange{r, r.BlockList(), node})
	}
	page.MapSVG, page.MapBlocks, page.DeviceList = memoryMap(ranges)
	if s.o.DeviceRegistry != nil {
		page.HasDevices = true
		for _, d := range s.o.DeviceRegistry.Active() {
			page.MemoryDevices = append(page.MemoryDevices, pageDevice{d, slices.Index(page.DeviceList, d.Device) + 1})
		}
	}

	notes, last := s.hub.recent()
	page.LastID = last
	for k := len(notes) - 1; k >= 0 && len(page.Notes) < recentRows; k-- {
		page.Notes = append(page.Notes, noteRow(notes[k]))
	}
	for k := len(notes) - 1; k >= 0; k-- {
		if n := notes[k]; n.InterfaceClassGUID == notify.GUIDDeviceMemory && n.IsArrival() {
			page.LastArrival = fmt.Sprintf("memory%d at %s", n.Interface.Number, n.ReadAt.Format("2006-01-02 15:04:05"))
			if d := n.Interface.Device; d != "" {
				page.LastArrival += ", device " + d
			} else if s.o.DeviceOf != nil {
				if d := s.o.DeviceOf(n.Interface.Number); d != "" {
					page.LastArrival += ", device " + d
				}
			}
			break
		}
	}
	page.Chart = chartOf(notes, now)
	page.Chart.Latency = s.latencies()
	page.Entries = s.entries(page.Chart.Latency, now)

	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusPage.Execute(w, page); err != nil {
		s.o.Logger.Warn("status page", "err", err)
	}
}

// noteRow is a notification as a row of the page.
func noteRow(n notify.Notification) pageNote {
	i := n.Interface
	detail := ""
	switch n.InterfaceClassGUID {
	case notify.GUIDDeviceProcessor:
		detail = fmt.Sprintf("cpu %d", i.Number)
	case notify.GUIDDeviceMemory:
		detail = fmt.Sprintf("block %d, %s", i.Number, memrange.HumanSize(i.Size))
	}
	if i.Node >= 0 {
		detail += fmt.Sprintf(", node %d", i.Node)
	}
	return pageNote{Time: n.ReadAt.Format("15:04:05"), Event: notify.EventName(n.Event), Class: notify.ClassName(n.InterfaceClassGUID),
		Link: n.SymbolicLinkName, Detail: detail, Cause: string(n.Cause), Seqnum: n.Seqnum}
}

// chartOf counts the notifications of the last hour per minute, by class and event.
func chartOf(notes []notify.Notification, now time.Time) chartData {
	step := time.Minute
	start := now.Truncate(step).Add(-59 * step)
	c := chartData{Start: start.UnixMilli(), Step: step.Milliseconds(), Now: now.UnixMilli(), Counts: map[string][]int{}}
	for _, class := range []string{"processor", "memory"} {
		for _, ev := range []string{"arrival", "removal"} {
			c.Counts[class+" "+ev] = make([]int, 60)
		}
	}
	for _, n := range notes {
		k := int(n.ReadAt.Sub(start) / step)
		key := notify.ClassName(n.InterfaceClassGUID) + " " + notify.EventName(n.Event)
		if k < 0 || k >= 60 || c.Counts[key] == nil {
			continue
		}
		c.Counts[key][k]++
	}
	return c
}

// latencies reads each callback's dispatch latency histogram and returns its p50, p90 and p99
// in seconds (interpolated in the buckets, as Prometheus' histogram_quantile does).
func (s *server) latencies() map[string][3]float64 {
	out := map[string][3]float64{}
	g := s.o.Latencies
	if g == nil {
		g = s.o.Gatherer
	}
	if g == nil {
		return out
	}
	mfs, err := g.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "hotplug_agent_dispatch_latency_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil || h.GetSampleCount() == 0 {
				continue
			}
			owner := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "callback" {
					owner = l.GetValue()
				}
			}
			out[owner] = [3]float64{quantile(0.5, h), quantile(0.9, h), quantile(0.99, h)}
		}
	}
	return out
}

// quantile estimates the q-quantile of a histogram by linear interpolation within the bucket
// it falls in; beyond the last finite bucket it is that bucket's upper bound.
func quantile(q float64, h *dto.Histogram) float64 {
	total := float64(h.GetSampleCount())
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range h.GetBucket() {
		upper, count := b.GetUpperBound(), float64(b.GetCumulativeCount())
		if count >= rank && !math.IsInf(upper, 1) {
			if count == below {
				return upper
			}
			return lower + (upper-lower)*(rank-below)/(count-below)
		}
		lower, below = upper, count
	}
	return lower
}

// durationText writes seconds for a person: "0.15 ms", "1.2 s".
func durationText(sec float64) string {
	switch {
	case sec < 1e-3:
		return strconv.FormatFloat(sec*1e3, 'f', 3, 64) + " ms"
	case sec < 1:
		return strconv.FormatFloat(sec*1e3, 'f', 1, 64) + " ms"
	default:
		return strconv.FormatFloat(sec, 'f', 2, 64) + " s"
	}
}

// stamp is t's time of day when it is of now's day, else its date and time: an agent runs for
// weeks, and an error of days ago must not read as today's.
func stamp(t, now time.Time) string {
	t = t.In(now.Location())
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

// entries are the registrations' rows, as of now.
func (s *server) entries(latency map[string][3]float64, now time.Time) []pageEntry {
	var out []pageEntry
	add := func(owner, kind, what string, e *notify.EntryInfo) {
		r := pageEntry{Owner: owner, Kind: kind, What: what, Errors: "0", Latency: "-", LastError: "-"}
		if e != nil {
			r.Queued, r.Delivered, r.Dropped = strconv.Itoa(e.Queued), strconv.FormatUint(e.Delivered, 10), strconv.FormatUint(e.Dropped, 10)
		}
		if l, ok := latency[owner]; ok {
			r.Latency = durationText(l[0]) + " / " + durationText(l[2])
		}
		if s.o.Errors != nil {
			if le, ok := s.o.Errors.Last(owner); ok {
				r.Errors = strconv.FormatUint(le.Count, 10)
				r.LastError = stamp(le.At, now) + ": " + le.Err
			}
		}
		out = append(out, r)
	}
	for _, e := range s.o.Registry.Entries() {
		add(e.Owner, "device interface", className(e.Class), &e)
	}
	if s.o.DeviceRegistry != nil {
		for _, e := range s.o.DeviceRegistry.Entries() {
			add(e.Owner, "memory devices", className(e.Class), &e)
		}
	}
	if s.o.Changes != nil {
		for _, e := range s.o.Changes.Entries() {
			add(e.Owner, "two-phase", className(e.Class), nil)
		}
	}
	if s.o.Targets != nil {
		for _, e := range s.o.Targets.Entries() {
			add(e.Owner, "target device", e.Target, nil)
		}
	}
	return out
}

// zoneClass is the CSS class of a range's zones on the map: Movable and the kernel zones apart.
func zoneClass(zones string) string {
	switch {
	case zones == "Movable":
		return "z-movable"
	case strings.Contains(zones, "/"):
		return "z-any" // offline, may go to several zones
	case zones == "Normal":
		return "z-normal"
	default:
		return "z-low" // None, DMA, DMA32: the low memory of boot
	}
}

// memoryMap draws the memory blocks as one SVG: a grid of mapColumns blocks a row in block
// order (so in physical order), each merged range a few rectangles coloured by state and zone,
// a memory device's ranges outlined and numbered, the blocks absent (holes) left grey. Its size
// grows with the ranges and the rows, not with the blocks: 8,192 blocks in a few ranges are a
// few dozen rectangles.
func memoryMap(ranges []memrange.Range) (template.HTML, []mapBlockRange, []string) {
	if len(ranges) == 0 {
		return "", nil, nil
	}
	total := ranges[len(ranges)-1].Last + 1
	cols := mapColumns
	if total <= mapSmall {
		cols = mapColumns / 2
	}
	rows := (total + cols - 1) / cols
	cellH := min(float64(mapCellWidth), max(3.0, float64(mapMaxHeight)/float64(rows)))
	width, height := cols*mapCellWidth, float64(rows)*cellH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="memmap" viewBox="0 0 %d %.1f" preserveAspectRatio="none" role="img" aria-labelledby="memmap-title" data-columns="%d" data-rows="%d">`,
		width, height, cols, rows)
	fmt.Fprintf(&b, `<title id="memmap-title">Memory map: %d block positions, %d ranges; each row is %d blocks</title>`, total, len(ranges), cols)
	fmt.Fprintf(&b, `<rect class="absent" x="0" y="0" width="%d" height="%.1f"/>`, width, height)
	var devices []string
	devIndex := map[string]int{}
	var named []mapBlockRange
	for _, r := range ranges {
		label := r.State + ", " + r.Zones
		if r.Node >= 0 {
			label += ", node " + strconv.Itoa(r.Node)
		}
		cls := "b " + r.State + " " + zoneClass(r.Zones)
		if r.Device != "" {
			if _, ok := devIndex[r.Device]; !ok {
				devices = append(devices, r.Device)
				devIndex[r.Device] = len(devices)
			}
			label += ", device " + r.Device
			cls += " dev"
		}
		named = append(named, mapBlockRange{First: r.First, Last: r.Last, Label: label, Start: r.Start, Size: r.Size() / uint64(r.Blocks())})
		title := html.EscapeString(fmt.Sprintf("memory%s: %s, 0x%x-0x%x (%s)", r.BlockList(), label, r.Start, r.End, memrange.HumanSize(r.Size())))
		fmt.Fprintf(&b, `<g class="%s" data-blocks="%s"><title>%s</title>`, cls, r.BlockList(), title)
		for k := r.First; k <= r.Last; {
			row, col := k/cols, k%cols
			n := min(r.Last-k+1, cols-col)
			fmt.Fprintf(&b, `<rect x="%d" y="%.2f" width="%d" height="%.2f"/>`, col*mapCellWidth, float64(row)*cellH, n*mapCellWidth, cellH)
			k += n
		}
		b.WriteString(`</g>`)
	}
	// Each device's number at its first block, when the rows are tall enough to read it.
	if cellH >= 8 {
		for _, r := range ranges {
			if r.Device == "" || devIndex[r.Device] < 0 {
				continue
			}
			row, col := r.First/cols, r.First%cols
			fmt.Fprintf(&b, `<text class="devno" x="%.1f" y="%.2f">%d</text>`, float64(col*mapCellWidth)+2, float64(row)*cellH+cellH-2, devIndex[r.Device])
			devIndex[r.Device] = -devIndex[r.Device] // once per device
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()), named, devices
}

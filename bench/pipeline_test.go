//go:build linux

package bench

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hotplug-agent/hotplug-agent/metrics"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

// The CPU MODALIAS of this machine's kernel (6.18, x86), as it sends it: the longest value of a
// CPU uevent, ending in a literal newline.
const modalias = "cpu:type:x86,ven0000fam0006mod00CF:feature:,0000,0001,0002,0003,0004,0005,0006,0007," +
	"0008,0009,000B,000C,000D,000E,000F,0010,0011,0013,0017,0018,0019,001A,001B,001C,002B,0034,003A," +
	"003B,003D,0068,006F,0070,0072,0074,0075,0076,0078,0079,007F,0080,0081,0089,008C,008D,0091,0093," +
	"0094,0095,0096,0097,0098,0099,009A,009B,009C,009D,009E,009F,00C0,00C5,00C8,00E1,00EA,00ED,00F3," +
	"00FF,0114,0115,0120,0121,0123,0124,0125,0126,0127,0128,0129,012A,012B,012D,0130,0131,0132,0133," +
	"0134,0135,0137,0138,013C,013D,013E,013F,0140,0141,0142,0143,0164,0165,016C,016E,017B,01C2,0201," +
	"0202,0206,0208,0209,020A,020B,020C,020E,0216,0244,025D,0282,0286,0289,02AB,02AC\n"

// seqDigits is the width of the SEQNUM values the benchmarks write into their datagrams.
const seqDigits = 10

// datagram is one kernel uevent whose SEQNUM can be rewritten in place, as the kernel fills the
// receive buffer afresh for every uevent.
type datagram struct {
	b   []byte
	seq int // offset of the SEQNUM digits
}

// cpuDatagram is the uevent of a real transition of CPU n (action online or offline).
func cpuDatagram(action string, n int) datagram {
	dev := "/devices/system/cpu/cpu" + strconv.Itoa(n)
	return newDatagram(action+"@"+dev, "ACTION="+action, "DEVPATH="+dev, "SUBSYSTEM=cpu",
		"DRIVER=processor", "MODALIAS="+modalias)
}

// memoryDatagram is the uevent of memory block n; synthetic adds SYNTH_UUID=0 (a write of action
// to the block's uevent file, as in the storm benchmark).
func memoryDatagram(action string, n int, synthetic bool) datagram {
	dev := "/devices/system/memory/memory" + strconv.Itoa(n)
	fields := []string{"ACTION=" + action, "DEVPATH=" + dev, "SUBSYSTEM=memory"}
	if synthetic {
		fields = append(fields, "SYNTH_UUID=0")
	}
	return newDatagram(action+"@"+dev, fields...)
}

func newDatagram(header string, fields ...string) datagram {
	b := append([]byte(header), 0)
	for _, f := range fields {
		b = append(append(b, f...), 0)
	}
	b = append(b, "SEQNUM="...)
	d := datagram{seq: len(b)}
	b = append(b, make([]byte, seqDigits)...)
	d.b = append(b, 0)
	d.setSeq(1)
	return d
}

// setSeq writes seq (with leading zeros) as the datagram's SEQNUM.
func (d datagram) setSeq(seq uint64) {
	for i := d.seq + seqDigits - 1; i >= d.seq; i-- {
		d.b[i] = byte('0' + seq%10)
		seq /= 10
	}
}

// memSysfs is a machine in memory: CPUs 0..cpus-1 and memory blocks 0..blocks-1, all online
// but the CPUs offline holds (the agent believes a CPU's offline or online uevent only when
// sysfs shows it: a benchmark sets offline before it sends the uevent).
type memSysfs struct {
	cpus, blocks int
	offline      map[int]bool
}

func (m memSysfs) CPU(n int) (sysfs.CPU, error) {
	return sysfs.CPU{Number: n, Online: !m.offline[n], Hotpluggable: n > 0, Node: 0}, nil
}

func (m memSysfs) CPUs() ([]sysfs.CPU, error) {
	out := make([]sysfs.CPU, m.cpus)
	for i := range out {
		out[i], _ = m.CPU(i)
	}
	return out, nil
}

func (m memSysfs) MemoryBlock(n int) (sysfs.MemoryBlock, error) {
	return sysfs.MemoryBlock{Index: n, State: "online", PhysIndex: uint64(n), PhysStart: uint64(n) << 27,
		Size: 1 << 27, ValidZones: "Normal", Node: 0}, nil
}

func (m memSysfs) MemoryBlockBasics(n int) (sysfs.MemoryBlock, error) { return m.MemoryBlock(n) }

// UeventSeqnum: the machine in memory has no counter to check SEQNUMs against.
func (m memSysfs) UeventSeqnum() (uint64, error) { return 0, fs.ErrNotExist }

func (m memSysfs) MemoryBlocks() ([]sysfs.MemoryBlock, error) {
	out := make([]sysfs.MemoryBlock, m.blocks)
	for i := range out {
		out[i], _ = m.MemoryBlock(i)
	}
	return out, nil
}

// pipeline is the agent's event loop (agent.loop) for one uevent, with the same steps in the
// same order, on an in-memory sysfs: parse, count, classify, translate (state.Tracker), publish
// (notify.Registry, with the agent's Prometheus metrics as its Observer).
type pipeline struct {
	log       *slog.Logger
	metrics   *metrics.Metrics
	tracker   *state.Tracker
	registry  *notify.Registry
	overflows atomic.Int64 // queue overflows the registry reported
}

// observer is the agent's Observer (its metrics) that also counts queue overflows.
type observer struct {
	notify.Observer
	overflows *atomic.Int64
}

func (o observer) QueueOverflow(owner string, dropped int) {
	o.overflows.Add(1)
	o.Observer.QueueOverflow(owner, dropped)
}

// ForOwner is the agent's metrics' (notify.OwnerObserver), still counting queue overflows.
func (o observer) ForOwner(owner string) notify.Observer {
	return observer{o.Observer.(notify.OwnerObserver).ForOwner(owner), o.overflows}
}

// newPipeline returns the agent's loop over fs.
func newPipeline(tb testing.TB, fs memSysfs) *pipeline {
	p := &pipeline{log: slog.New(slog.DiscardHandler), tracker: state.New(fs)}
	p.metrics = metrics.New(prometheus.NewRegistry(), "bench")
	p.registry = notify.NewRegistry(notify.Options{Logger: p.log, Observer: observer{p.metrics, &p.overflows}})
	active, err := p.tracker.Scan()
	if err != nil {
		tb.Fatal(err)
	}
	p.registry.Seed(active)
	tb.Cleanup(func() { p.registry.Close(context.Background()) })
	return p
}

// handle is agent.loop's body for one datagram received at now.
func (p *pipeline) handle(b []byte, now time.Time) error {
	ev, err := udev.Parse(b)
	if err != nil {
		return err
	}
	ev.ReadAt = now
	p.metrics.Uevent(ev.Subsystem, ev.Action)
	if state.Suspicious(ev.Subsystem, ev.DevPath) {
		return fmt.Errorf("suspicious devpath %s", ev.DevPath)
	}
	if kind, _ := state.Classify(ev.Subsystem, ev.DevPath); kind != state.KindNone && p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("uevent", "action", ev.Action, "devpath", ev.DevPath, "seqnum", ev.Seqnum, "synthetic", ev.Synthetic())
	}
	out := p.tracker.Handle(&ev)
	for i := range out.Notes {
		if p.registry.Publish(out.Notes[i]) {
			p.metrics.Notified(&out.Notes[i])
		}
	}
	if out.Gap {
		return fmt.Errorf("SEQNUM gap at %d", ev.Seqnum)
	}
	return nil
}

// cpuTime is this process's CPU time.
func cpuTime(tb testing.TB) time.Duration {
	d, err := CPUTime(os.Getpid())
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// reportRates adds the events per second of wall time and per second of CPU time (all cores
// together: the cost of an event) to b's results.
func reportRates(b *testing.B, events int, wall, cpu time.Duration) {
	b.ReportMetric(float64(events)/wall.Seconds(), "events/s")
	b.ReportMetric(float64(events)/cpu.Seconds(), "events/cpu-s")
}

// BenchmarkParse is udev.Parse of a CPU uevent (the largest the agent follows): one op is one
// event, and allocs/op is the parser's allocations per event.
func BenchmarkParse(b *testing.B) {
	d := cpuDatagram("online", 1)
	b.SetBytes(int64(len(d.b)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := udev.Parse(d.b); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPipeline runs the agent's event loop without the kernel: CPU uevents that are real
// transitions (each CPU of 64 offline, then online, so that every event is a notification) are
// parsed, translated and published to 1, 8 and 64 registrations, whose callbacks count them. One
// op is one event, delivered to every registration: the clock stops once the last callback has
// run. events/cpu-s is events per second of CPU time of the whole process (every goroutine, the
// registrations' included): the events one core handles per second.
func BenchmarkPipeline(b *testing.B) {
	for _, regs := range []int{1, 8, 64} {
		b.Run("registrations="+strconv.Itoa(regs), func(b *testing.B) { benchPipeline(b, regs) })
	}
}

func benchPipeline(b *testing.B, regs int) {
	const cpus = 64
	fs := memSysfs{cpus: cpus, offline: map[int]bool{}}
	p := newPipeline(b, fs)
	var delivered atomic.Int64
	var target atomic.Int64
	done := make(chan struct{}, 1)
	cb := func(_ context.Context, _ notify.Notification, _ any) error {
		if delivered.Add(1) == target.Load() {
			done <- struct{}{}
		}
		return nil
	}
	for i := range regs {
		if _, err := p.registry.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceProcessor,
			"bench-"+strconv.Itoa(i), cb, nil); err != nil {
			b.Fatal(err)
		}
	}
	// CPU i goes offline, then online: 2*cpus datagrams, every one a notification.
	var cycle []datagram
	for i := range cpus {
		cycle = append(cycle, cpuDatagram("offline", i), cpuDatagram("online", i))
	}
	// A registration more than notify.DefaultQueueLimit notifications behind is resynchronised
	// instead of being sent each one (the kernel cannot produce events this fast, a loop feeding
	// itself can): the events go in batches well under the limit, each waited for.
	const batch = notify.DefaultQueueLimit / 4
	seq := uint64(1)
	i := 0
	run := func(n int) {
		target.Store(delivered.Load() + int64(n*regs))
		for range n {
			k := i % len(cycle)
			d := cycle[k]
			fs.offline[k/2] = k%2 == 0 // what sysfs shows once the kernel sent d
			i++
			d.setSeq(seq)
			seq++
			if err := p.handle(d.b, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
		<-done
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, wall0 := cpuTime(b), time.Now()
	for left := b.N; left > 0; left -= batch {
		run(min(left, batch))
	}
	wall, cpu := time.Since(wall0), cpuTime(b)-cpu0
	b.StopTimer()
	if o := p.overflows.Load(); o != 0 {
		b.Fatalf("%d queue overflows: the benchmark outran the registry's queue limit", o)
	}
	reportRates(b, b.N, wall, cpu)
}

// BenchmarkStormPath is the loop for the storm's events: synthetic add and online uevents of
// memory blocks, which the agent reads, counts and classifies but which announce nothing.
func BenchmarkStormPath(b *testing.B) {
	const blocks = 196
	p := newPipeline(b, memSysfs{cpus: 2, blocks: blocks})
	var cycle []datagram
	for i := range blocks {
		cycle = append(cycle, memoryDatagram("add", i, true), memoryDatagram("online", i, true))
	}
	seq := uint64(1)
	b.ReportAllocs()
	cpu0, wall0 := cpuTime(b), time.Now()
	n := 0
	for b.Loop() {
		d := cycle[n%len(cycle)]
		d.setSeq(seq)
		seq++
		n++
		if err := p.handle(d.b, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	reportRates(b, n, time.Since(wall0), cpuTime(b)-cpu0)
}

// BenchmarkUnsynthesize is what the latency benchmark's TaggedSource adds to the agent's path
// for a tagged synthetic uevent: one more parse.
func BenchmarkUnsynthesize(b *testing.B) {
	d := newDatagram("online@/devices/system/cpu/cpu1", "ACTION=online", "DEVPATH=/devices/system/cpu/cpu1",
		"SUBSYSTEM=cpu", "SYNTH_UUID=0b0e4a4c-9f3e-4b9a-8a43-1b2f4c5d6e7f", "SYNTH_ARG_BENCH=inproc", "MODALIAS="+modalias)
	ev, err := udev.Parse(d.b)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unsynthesize(ev); err != nil {
			b.Fatal(err)
		}
	}
}

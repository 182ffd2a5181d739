//go:build linux

package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/agent"
	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/notify"
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

// replay is an agent.Source standing for the kernel's uevent socket: it hands the agent
// pre-built kernel datagrams, parsed as the agent's socket parses them (udev.ParseCompact), as
// many as the benchmark releases, and before each one makes the fixture's sysfs show what the
// kernel shows once it has sent it. Read blocks while nothing is released, and the loop asking
// for more than it was given says that it has handled all of it. Read is for the agent's loop; release and wait are for the
// benchmark's goroutine.
type replay struct {
	cycle   []step
	i       int
	seq     uint64
	left    int           // datagrams released, not yet read
	release chan int      // the benchmark's: n more datagrams
	handled chan struct{} // capacity 1: the loop asked for a datagram with none left
	closed  chan struct{}
	once    sync.Once
}

// step is one datagram of a replay's cycle, and the writes to sysfs files that go before it.
type step struct {
	d      datagram
	writes []write
}

// write is the kernel's change to one sysfs file: value, written at offset 0.
type write struct {
	file  *os.File
	value []byte
}

func newReplay(cycle []step) *replay {
	return &replay{cycle: cycle, seq: 1, release: make(chan int), handled: make(chan struct{}, 1), closed: make(chan struct{})}
}

// ReadQueued is Read without waiting: ok is false when no datagram is left of those released.
// As udev.Conn's, it lets the loop take a burst at once.
func (r *replay) ReadQueued() (ev udev.Event, ok bool, err error) {
	if r.left == 0 {
		return ev, false, nil
	}
	r.left--
	ev, err = udev.ParseCompact(r.kernel())
	ev.ReadAt = time.Now()
	return ev, err == nil, err
}

// Read returns the next datagram released, parsed. It blocks until there is one, ctx ends or
// the replay is closed; it is for one goroutine at a time (the agent's loop).
func (r *replay) Read(ctx context.Context) (udev.Event, error) {
	for r.left == 0 {
		select {
		case r.handled <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return udev.Event{}, ctx.Err()
		case <-r.closed:
			return udev.Event{}, net.ErrClosed
		case r.left = <-r.release:
		}
	}
	r.left--
	ev, err := udev.ParseCompact(r.kernel())
	ev.ReadAt = time.Now()
	return ev, err
}

// kernel is the kernel's part of the next uevent: the sysfs write that goes before it, and the
// datagram with its SEQNUM. It is a function of its own so that the profile shows its cost apart
// from the agent's.
//
//go:noinline
func (r *replay) kernel() []byte {
	s := &r.cycle[r.i%len(r.cycle)]
	r.i++
	s.write()
	s.d.setSeq(r.seq)
	r.seq++
	return s.d.b
}

// write makes the step's sysfs writes.
func (s *step) write() {
	for _, w := range s.writes {
		if _, err := w.file.WriteAt(w.value, 0); err != nil {
			panic(err)
		}
	}
}

// kernelCPU is the CPU time the kernel's part of n uevents costs the replay (their sysfs
// writes), measured apart from the agent: the writes of whole cycles from where the replay is,
// which leave the fixture as they found it, are made and timed, 20,000 to 200,000 of them. The
// agent waits for nothing meanwhile (it reads sysfs only for a uevent).
func (r *replay) kernelCPU(tb testing.TB, n int) time.Duration {
	steps := min(max(n, 20000), 200000)
	steps += len(r.cycle) - steps%len(r.cycle)
	cpu0 := cpuTime(tb)
	for i := range steps {
		r.cycle[(r.i+i)%len(r.cycle)].write()
	}
	return (cpuTime(tb) - cpu0) * time.Duration(n) / time.Duration(steps)
}

// Close ends a pending Read and every later one with net.ErrClosed. It is safe for concurrent use.
func (r *replay) Close() error {
	r.once.Do(func() { close(r.closed) })
	return nil
}

// wait blocks until the agent's loop has handled every datagram released.
func (r *replay) wait(tb testing.TB) {
	select {
	case <-r.handled:
	case <-time.After(time.Minute):
		tb.Fatal("the agent's loop has not asked for the next datagram in a minute")
	}
}

// fixtureRoot returns an empty directory for a sysfs fixture: on /dev/shm, in memory as sysfs is,
// where there is one.
func fixtureRoot(tb testing.TB) string {
	dir, err := os.MkdirTemp("/dev/shm", "hotplug-bench-")
	if err != nil {
		return tb.TempDir()
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startAgent builds the agent that `hotplug-agent run` builds (agent.New: no state file, no
// configured callbacks and log_notifications off, so that the registrations are the benchmark's
// alone; an HTTP listener on a free port) over the sysfs fixture at root, with src
// in place of the kernel's uevent socket, lets register make its registrations, and runs it
// (agent.Run) until the benchmark ends. It returns once the agent's loop waits for src.
func startAgent(tb testing.TB, root string, src *replay, register func(*agent.Agent)) {
	a, err := agent.New(agent.Options{
		SysfsPath: root, ListenAddresses: []string{"127.0.0.1:0"}, Source: src,
		Logger: slog.New(slog.DiscardHandler), ShutdownGrace: 5 * time.Second,
		Config: &config.Config{LogNotifications: new(bool)},
	})
	if err != nil {
		tb.Fatal(err)
	}
	register(a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	src.wait(tb)
}

// cpuCycle is the datagrams of real transitions of CPUs 1..cpus of the fixture at root: each
// goes offline, then online, its online file and cpu/online (the list of CPUs online) written
// before each uevent, as the kernel changes them before it sends it, so that every uevent is a
// notification. (cpu0 has no online file: it cannot go offline.)
func cpuCycle(tb testing.TB, root string, cpus int) []step {
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(root, "devices/system/cpu", name), os.O_WRONLY, 0)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { f.Close() })
		return f
	}
	list := open("online")
	all := make([]int, cpus+1)
	for n := range all {
		all[n] = n
	}
	online := func(except int) []byte {
		// Of the same length whatever it holds, padded with blanks that readers trim: a shorter
		// list written at offset 0 would leave the end of a longer one behind.
		l := sysfs.FormatCPUList(slices.DeleteFunc(slices.Clone(all), func(n int) bool { return n == except }))
		return fmt.Appendf(nil, "%-*s\n", len(sysfs.FormatCPUList(all))+6, l)
	}
	var cycle []step
	for n := 1; n <= cpus; n++ {
		f := open("cpu" + strconv.Itoa(n) + "/online")
		cycle = append(cycle,
			step{cpuDatagram("offline", n), []write{{f, []byte("0\n")}, {list, online(n)}}},
			step{cpuDatagram("online", n), []write{{f, []byte("1\n")}, {list, online(-1)}}})
	}
	return cycle
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
func BenchmarkParse(b *testing.B) { benchParse(b, udev.Parse) }

// BenchmarkParseCompact is udev.ParseCompact of the same uevent, as the agent's socket parses
// it: the checks of Parse, without the copy of the datagram.
func BenchmarkParseCompact(b *testing.B) { benchParse(b, udev.ParseCompact) }

func benchParse(b *testing.B, parse func([]byte) (udev.Event, error)) {
	d := cpuDatagram("online", 1)
	b.SetBytes(int64(len(d.b)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parse(d.b); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPipeline runs the agent's own event loop without the kernel: agent.New and agent.Run,
// as `hotplug-agent run` makes and runs them, over a sysfs fixture of 65 CPUs in memory, with a
// source that replays kernel datagrams in place of the uevent socket. The uevents are real
// transitions (each of CPUs 1 to 64 offline, then online, its online file written first, so that
// every event is a notification), read, parsed, counted, checked against sysfs, passed through
// the online gate and published to 1, 8 and 64 registrations of the processor class, whose
// callbacks count them. One op is one event, delivered to every registration: the clock stops
// once the last callback has run. events/cpu-s is events per second of CPU time of the whole
// process (every goroutine: the loop's, the registrations', the saver's, the benchmark's sysfs
// writes): the events one core handles per second.
func BenchmarkPipeline(b *testing.B) {
	for _, regs := range []int{1, 8, 64} {
		b.Run("registrations="+strconv.Itoa(regs), func(b *testing.B) { benchPipeline(b, regs) })
	}
}

func benchPipeline(b *testing.B, regs int) {
	p := startPipeline(b, regs)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, wall0 := cpuTime(b), time.Now()
	for left := b.N; left > 0; left -= pipelineBatch {
		p.run(b, min(left, pipelineBatch))
	}
	wall, cpu := time.Since(wall0), cpuTime(b)-cpu0
	b.StopTimer()
	reportRates(b, b.N, wall, cpu)
	b.ReportMetric(float64(b.N)/(cpu-p.src.kernelCPU(b, b.N)).Seconds(), "agent-events/cpu-s")
}

// The pipeline runs without the kernel and its results are checked (every event delivered to
// every registration, as a uevent's notification): what BenchmarkPipeline measures is the agent
// doing its work.
func TestPipeline(t *testing.T) {
	p := startPipeline(t, 3)
	p.run(t, 200) // more than one cycle of the 64 CPUs
	p.run(t, 1)
}

// A registration more than notify.DefaultQueueLimit notifications behind is resynchronised
// instead of being sent each one (the kernel cannot produce events this fast, a source feeding
// the loop from memory can): the pipeline's events go in batches well under the limit, each
// waited for.
const pipelineBatch = notify.DefaultQueueLimit / 4

// pipeline is a running agent fed the CPU cycle of cpuCycle, with registrations whose callback
// counts what they are given.
type pipeline struct {
	src  *replay
	regs int
	// counts are the notifications each registration's callback has been given, each on a
	// cache line of its own: the registrations' goroutines run on both cores, and one shared
	// counter would cost every callback a cache miss, which no agent's user would pay.
	counts []paddedCount
	// want is what every count reaches once the events released have been delivered; left is
	// how many registrations have not reached it yet.
	want, left, other atomic.Int64
	done              chan struct{}
}

type paddedCount struct {
	n atomic.Int64
	_ [56]byte
}

// startPipeline starts the agent over a fixture of 65 CPUs, with regs registrations of the
// processor class.
func startPipeline(tb testing.TB, regs int) *pipeline {
	const cpus = 64
	root := fixtureRoot(tb)
	if err := WriteFixture(root, cpus+1, 0); err != nil {
		tb.Fatal(err)
	}
	p := &pipeline{src: newReplay(cpuCycle(tb, root, cpus)), regs: regs, counts: make([]paddedCount, regs),
		done: make(chan struct{}, 1)}
	startAgent(tb, root, p.src, func(a *agent.Agent) {
		for i := range regs {
			count := &p.counts[i].n
			cb := func(_ context.Context, n notify.Notification, _ any) error {
				if n.Cause != notify.CauseUevent {
					p.other.Add(1) // a resync: events were lost, or the source outran a queue
				}
				if count.Add(1) == p.want.Load() && p.left.Add(-1) == 0 {
					p.done <- struct{}{}
				}
				return nil
			}
			if _, err := a.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.GUIDDeviceProcessor,
				"bench-"+strconv.Itoa(i), cb, nil); err != nil {
				tb.Fatal(err)
			}
		}
	})
	return p
}

// run releases n events (at most pipelineBatch) and blocks until every registration has been
// given the notification of each.
func (p *pipeline) run(tb testing.TB, n int) {
	p.left.Store(int64(p.regs))
	p.want.Add(int64(n))
	p.src.release <- n
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		tb.Fatalf("%d of %d registrations given all %d notifications after a minute", int64(p.regs)-p.left.Load(), p.regs, p.want.Load())
	}
	if o := p.other.Load(); o != 0 {
		tb.Fatalf("%d notifications not of a uevent: the agent resynchronised", o)
	}
	for i := range p.counts {
		if got := p.counts[i].n.Load(); got != p.want.Load() {
			tb.Fatalf("registration %d was given %d notifications; want %d", i, got, p.want.Load())
		}
	}
}

// BenchmarkStormPath is the agent's loop (as in BenchmarkPipeline) for the storm's events:
// synthetic add and online uevents of memory blocks, which it reads, counts and classifies but
// which announce nothing. The clock stops once the loop has handled the last one.
func BenchmarkStormPath(b *testing.B) {
	const blocks = 196
	root := fixtureRoot(b)
	if err := WriteFixture(root, 2, blocks); err != nil {
		b.Fatal(err)
	}
	var cycle []step
	for i := range blocks {
		cycle = append(cycle, step{d: memoryDatagram("add", i, true)}, step{d: memoryDatagram("online", i, true)})
	}
	src := newReplay(cycle)
	startAgent(b, root, src, func(*agent.Agent) {})
	const batch = 4096
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, wall0 := cpuTime(b), time.Now()
	for left := b.N; left > 0; left -= batch {
		src.release <- min(left, batch)
		src.wait(b)
	}
	wall, cpu := time.Since(wall0), cpuTime(b)-cpu0
	b.StopTimer()
	reportRates(b, b.N, wall, cpu)
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

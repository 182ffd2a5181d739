package memdev

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

const blockSize = 128 << 20

// fixture is a sysfs tree with memory blocks, ACPI memory devices and an iomem file.
type fixture struct {
	t     *testing.T
	root  string
	iomem string
	fs    sysfs.FS
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{t: t, root: root, iomem: filepath.Join(root, "iomem")}
	f.write("devices/system/cpu/present", "0\n")
	f.write("devices/system/memory/block_size_bytes", fmt.Sprintf("%x\n", blockSize))
	f.setIOMem("00100000-3fffffff : System RAM\n")
	var err error
	if f.fs, err = sysfs.NewFS(root); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) write(rel, content string) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	// Write and rename, as the tracker reads while the test writes: the kernel's files never
	// show half a content.
	if err := os.WriteFile(p+".tmp", []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) setIOMem(s string) { f.write("iomem", s) }

// addBlocks makes memory blocks first..last, online.
func (f *fixture) addBlocks(first, last int) {
	for b := first; b <= last; b++ {
		f.write(fmt.Sprintf("devices/system/memory/memory%d/state", b), "online\n")
		f.write(fmt.Sprintf("devices/system/memory/memory%d/phys_index", b), fmt.Sprintf("%08x\n", b))
	}
}

// link binds blocks first..last to ACPI memory device id, as the kernel does: the device in
// bus/acpi/devices, a physical_node link from the device to each block, a firmware_node link back.
func (f *fixture) link(id string, first, last int) {
	f.t.Helper()
	var blocks []int
	for b := first; b <= last; b++ {
		blocks = append(blocks, b)
	}
	testenv.LinkMemoryDevice(f.t, f.root, id, blocks...)
}

func block(b int) notify.Interface {
	return notify.Interface{ClassGUID: notify.GUIDDeviceMemory, SymbolicLink: state.MemoryBlockLink(b), Number: b,
		Node: 0, PhysStart: uint64(b) * blockSize, Size: blockSize, State: "online"}
}

// recorder collects published device notifications.
type recorder struct {
	mu  sync.Mutex
	got []notify.Notification
}

func (r *recorder) publish(n notify.Notification) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, n)
	return true
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range r.got {
		out = append(out, describe(n))
	}
	return out
}

func describe(n notify.Notification) string {
	i := n.Interface
	return fmt.Sprintf("%s %s blocks %s at %#x size %dM", notify.EventName(n.Event), i.Device, i.Blocks, i.PhysStart, i.Size>>20)
}

// mismatch says how the notifications r holds differ from want; "" when they are want.
func (r *recorder) mismatch(want ...string) string {
	got := r.list()
	if strings.Join(got, "\n") == strings.Join(want, "\n") {
		return ""
	}
	return fmt.Sprintf("device notifications:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
}

// waitList waits until r holds want, and fails when it holds anything else for 20 s.
func (r *recorder) waitList(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := r.mismatch(want...)
		if m == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startTracker(t *testing.T, f *fixture, active []notify.Interface) (*Tracker, *recorder, []notify.Interface) {
	t.Helper()
	tr, rec, seeded := newTracker(t, f, active)
	runTracker(t, tr)
	return tr, rec, seeded
}

// newTracker is startTracker without Run.
func newTracker(t *testing.T, f *fixture, active []notify.Interface) (*Tracker, *recorder, []notify.Interface) {
	t.Helper()
	return newTrackerWith(t, f, active, Options{Settle: 50 * time.Millisecond, Shrink: 400 * time.Millisecond,
		Pending: time.Second, Poll: 5 * time.Millisecond})
}

// newTrackerWith is newTracker with the timings of o.
func newTrackerWith(t *testing.T, f *fixture, active []notify.Interface, o Options) (*Tracker, *recorder, []notify.Interface) {
	t.Helper()
	rec := &recorder{}
	o.Reader, o.Publish = NewReader(f.fs, f.iomem), rec.publish
	tr := New(o)
	seeded, err := tr.Seed(active)
	if err != nil {
		t.Fatal(err)
	}
	return tr, rec, seeded
}

// runTracker runs tr until the test ends.
func runTracker(t *testing.T, tr *Tracker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tr.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func arrive(tr *Tracker, b int, seq uint64) {
	tr.Changed(notify.NewNotification(notify.GUIDDeviceInterfaceArrival, block(b), seq, time.Now(), notify.CauseUevent))
}

func leave(tr *Tracker, b int, seq uint64) {
	tr.Changed(notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, block(b), seq, time.Now(), notify.CauseUevent))
}

// TestDeviceRemovalBeforeItsArrival: a device that lost a block while the rest of it stayed online
// is removed and arrives again, smaller, in one evaluation; the arrival's cause (block 34's
// notification) is older than the removal's (block 35's), yet the removal comes first, or the
// registry would refuse the arrival of an interface still active and lose it.
func TestDeviceRemovalBeforeItsArrival(t *testing.T) {
	f := newFixture(t)
	f.addBlocks(32, 35)
	dev := filepath.Join(f.root, strings.TrimPrefix(testenv.LinkMemoryDevice(t, f.root, "PNP0C80:00", 32, 33, 34, 35), "/sys/"))
	rec := &recorder{}
	tr := New(Options{Reader: NewReader(f.fs, f.iomem), Publish: rec.publish, Settle: time.Millisecond,
		Shrink: time.Millisecond, Pending: time.Second, Poll: time.Millisecond})
	if _, err := tr.Seed([]notify.Interface{block(32), block(33), block(34), block(35)}); err != nil {
		t.Fatal(err)
	}
	arrive(tr, 34, 5)
	leave(tr, 35, 10)
	// Block 35 goes, as the kernel removes it: its directory and the device's link to it.
	if err := os.Remove(filepath.Join(dev, "physical_node3")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(f.root, "devices/system/memory/memory35")); err != nil {
		t.Fatal(err)
	}
	tr.Removed(35, time.Now())
	if _, err := tr.evaluate(nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"removal PNP0C80:00 blocks 32-35 at 0x100000000 size 512M",
		"arrival PNP0C80:00 blocks 32-34 at 0x100000000 size 384M",
	}
	if m := rec.mismatch(want...); m != "" {
		t.Error(m)
	}
}

// TestACPIDeviceLifecycle: boot memory of no device and a DIMM present at start are seeded, not
// announced; a hot-added DIMM whose blocks come online before the kernel links them to their
// device arrives once, whole, after the links appear; it is removed when its first block goes,
// once; /interfaces' device column (DeviceOf) follows.
func TestACPIDeviceLifecycle(t *testing.T) {
	f := newFixture(t)
	f.addBlocks(0, 7)
	f.addBlocks(32, 35)
	f.link("PNP0C80:00", 32, 35)
	var active []notify.Interface
	for _, b := range []int{0, 1, 2, 3, 4, 5, 6, 7, 32, 33, 34, 35} {
		active = append(active, block(b))
	}
	tr, rec, seeded := startTracker(t, f, active)
	if len(seeded) != 1 || seeded[0].Device != "PNP0C80:00" || seeded[0].Blocks != "32-35" || seeded[0].Size != 4*blockSize ||
		seeded[0].SymbolicLink != "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:00" {
		t.Fatalf("seeded %+v; want PNP0C80:00 with blocks 32-35, 512 MiB, at its /sys path", seeded)
	}
	if got := tr.DeviceOf(33); got != "PNP0C80:00" {
		t.Errorf("DeviceOf(33) = %q; want PNP0C80:00", got)
	}
	if got := tr.DeviceOf(3); got != "" {
		t.Errorf("DeviceOf(3) = %q; want none (boot memory)", got)
	}

	// A 512 MiB hot-add: the kernel adds the four blocks, they come online, and only then are
	// they linked to their device.
	f.addBlocks(40, 43)
	for b := 40; b <= 43; b++ {
		tr.Added(b, time.Now())
	}
	for b := 40; b <= 43; b++ {
		arrive(tr, b, uint64(100+b))
	}
	time.Sleep(30 * time.Millisecond) // several polls without the links
	if got := rec.list(); len(got) != 0 {
		t.Fatalf("announced %v before the blocks were linked to their device", got)
	}
	f.link("PNP0C80:01", 40, 43)
	rec.waitList(t, "arrival PNP0C80:01 blocks 40-43 at 0x140000000 size 512M")
	n := rec.got[0]
	if n.Seqnum != 143 || n.Cause != notify.CauseUevent || n.SymbolicLinkName != "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:01" {
		t.Errorf("arrival: seqnum %d cause %s link %s; want the last block's seqnum 143, cause uevent, the device's path", n.Seqnum, n.Cause, n.SymbolicLinkName)
	}

	// Unplug: the first block going offline removes the device; the others add nothing.
	leave(tr, 41, 200)
	rec.waitList(t, "arrival PNP0C80:01 blocks 40-43 at 0x140000000 size 512M",
		"removal PNP0C80:01 blocks 40-43 at 0x140000000 size 512M")
	if rec.got[1].Seqnum != 200 {
		t.Errorf("removal seqnum %d; want that of the block that went, 200", rec.got[1].Seqnum)
	}
	for _, b := range []int{40, 42, 43} {
		leave(tr, b, uint64(200+b))
	}
	time.Sleep(30 * time.Millisecond)
	if got := rec.list(); len(got) != 2 {
		t.Fatalf("after the other blocks went: %v; want nothing more", got)
	}
	// Blocks online again (the kernel's error rolled an offline back): the device is whole again.
	for _, b := range []int{40, 41, 42, 43} {
		arrive(tr, b, uint64(300+b))
	}
	rec.waitList(t, "arrival PNP0C80:01 blocks 40-43 at 0x140000000 size 512M",
		"removal PNP0C80:01 blocks 40-43 at 0x140000000 size 512M",
		"arrival PNP0C80:01 blocks 40-43 at 0x140000000 size 512M")
	if got := tr.Announced(); len(got) != 2 || got[0].Device != "PNP0C80:00" || got[1].Device != "PNP0C80:01" {
		t.Errorf("Announced() = %+v; want PNP0C80:00 and PNP0C80:01", got)
	}
}

// TestDeviceWaitsForEveryBlock: a device with a block still offline is not announced; a block
// that never shows a device stops delaying the others after Pending.
func TestDeviceWaitsForEveryBlock(t *testing.T) {
	f := newFixture(t)
	f.addBlocks(8, 11)
	f.link("PNP0C80:00", 8, 11)
	tr, rec, _ := startTracker(t, f, nil)
	for b := 8; b <= 10; b++ {
		arrive(tr, b, uint64(b))
	}
	f.addBlocks(20, 20)
	tr.Added(20, time.Now()) // memory of no device, added at the same time
	time.Sleep(30 * time.Millisecond)
	if got := rec.list(); len(got) != 0 {
		t.Fatalf("announced %v with block 11 offline", got)
	}
	start := time.Now()
	arrive(tr, 11, 11)
	rec.waitList(t, "arrival PNP0C80:00 blocks 8-11 at 0x40000000 size 512M")
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Errorf("announced after %v although block 20 was still waiting for a device (Pending 1 s)", waited)
	}
}

// TestVirtioMemResize: a virtio-mem device arrives once its plug has settled, and a resize is
// the removal of the old extent followed by the arrival of the new one.
func TestVirtioMemResize(t *testing.T) {
	f := newFixture(t)
	// Timings far apart from the test's own steps, which a loaded machine may stretch by hundreds
	// of milliseconds: each growth's two blocks must come within Settle, the shrink's blocks
	// further apart than Settle and closer than Shrink.
	const settle, shrink, step = 500 * time.Millisecond, 3 * time.Second, time.Second
	tr, rec, _ := newTrackerWith(t, f, nil, Options{Settle: settle, Shrink: shrink, Pending: time.Second, Poll: 5 * time.Millisecond})
	runTracker(t, tr)
	grow := func(first, last int) {
		f.setIOMem(fmt.Sprintf("00100000-3fffffff : System RAM\n180000000-27fffffff : virtio5\n  %x-%x : System RAM (virtio_mem)\n",
			uint64(first)*blockSize, uint64(last+1)*blockSize-1))
	}
	// Grow to 256 MiB, block by block.
	f.addBlocks(48, 49)
	for b := 48; b <= 49; b++ {
		grow(48, b)
		tr.Added(b, time.Now())
		arrive(tr, b, uint64(b))
	}
	rec.waitList(t, "arrival virtio5 blocks 48-49 at 0x180000000 size 256M")
	if got := rec.got[0].SymbolicLinkName; got != "/sys/bus/virtio/devices/virtio5" {
		t.Errorf("symbolic link %s; want /sys/bus/virtio/devices/virtio5 (the fixture has no device directory)", got)
	}
	// Grow to 512 MiB.
	f.addBlocks(50, 51)
	grow(48, 51)
	for b := 50; b <= 51; b++ {
		tr.Added(b, time.Now())
		arrive(tr, b, uint64(b))
	}
	rec.waitList(t, "arrival virtio5 blocks 48-49 at 0x180000000 size 256M",
		"removal virtio5 blocks 48-49 at 0x180000000 size 256M",
		"arrival virtio5 blocks 48-51 at 0x180000000 size 512M")
	// Shrink to 128 MiB, the blocks going further apart than Settle, as on a busy host: the
	// first block to go removes it, and what is left arrives once, after it stayed for Shrink.
	for b := 51; b >= 49; b-- {
		leave(tr, b, uint64(100+b))
		grow(48, b-1)
		tr.Removed(b, time.Now())
		time.Sleep(step)
	}
	rec.waitList(t, "arrival virtio5 blocks 48-49 at 0x180000000 size 256M",
		"removal virtio5 blocks 48-49 at 0x180000000 size 256M",
		"arrival virtio5 blocks 48-51 at 0x180000000 size 512M",
		"removal virtio5 blocks 48-51 at 0x180000000 size 512M",
		"arrival virtio5 blocks 48 at 0x180000000 size 128M")
}

// TestUnreadableIOMem: an iomem file that is not one leaves virtio-mem out and ACPI devices in.
func TestUnreadableIOMem(t *testing.T) {
	f := newFixture(t)
	f.setIOMem("this is not iomem\n")
	f.addBlocks(8, 8)
	f.link("PNP0C80:00", 8, 8)
	_, _, seeded := startTracker(t, f, []notify.Interface{block(8)})
	if len(seeded) != 1 || seeded[0].Device != "PNP0C80:00" {
		t.Fatalf("seeded %+v; want PNP0C80:00", seeded)
	}
}

// TestOnliningReadsLayoutOnce: once a hot-added DIMM's blocks are linked to their device, their
// coming online one by one is judged on the layout already read, not by reading every device's
// links again for each block (a cost that grew with the square of the blocks); the device still
// arrives once, whole. A block going offline reads the layout again.
func TestOnliningReadsLayoutOnce(t *testing.T) {
	f := newFixture(t)
	f.addBlocks(0, 7)
	var active []notify.Interface
	for b := 0; b <= 7; b++ {
		active = append(active, block(b))
	}
	// The evaluation the Added calls ask for runs here, before Run, so that no read they asked for
	// can still be to come when the count starts.
	tr, rec, _ := newTracker(t, f, active)
	f.addBlocks(64, 127)
	f.link("PNP0C80:00", 64, 127)
	for b := 64; b <= 127; b++ {
		tr.Added(b, time.Now())
	}
	if _, err := tr.evaluate(nil); err != nil {
		t.Fatal(err)
	}
	if got := tr.DeviceOf(127); got != "PNP0C80:00" {
		t.Fatalf("DeviceOf(127) = %q after the added blocks were read; want PNP0C80:00", got)
	}
	tr.mu.Lock()
	stale, pending := tr.stale, len(tr.pending)
	tr.mu.Unlock()
	if stale || pending != 0 {
		t.Fatalf("after the added blocks' device was read: stale %v, %d blocks pending; want neither", stale, pending)
	}
	runTracker(t, tr)
	before := tr.o.Reader.reads.Load()
	for b := 64; b <= 127; b++ {
		arrive(tr, b, uint64(b))
		time.Sleep(100 * time.Microsecond)
	}
	rec.waitList(t, "arrival PNP0C80:00 blocks 64-127 at 0x200000000 size 8192M")
	if n := tr.o.Reader.reads.Load() - before; n != 0 {
		t.Errorf("the layout was read %d times while the 64 blocks of a known device came online; want 0", n)
	}
	before = tr.o.Reader.reads.Load()
	leave(tr, 100, 200)
	rec.waitList(t, "arrival PNP0C80:00 blocks 64-127 at 0x200000000 size 8192M",
		"removal PNP0C80:00 blocks 64-127 at 0x200000000 size 8192M")
	if n := tr.o.Reader.reads.Load() - before; n == 0 {
		t.Error("a block going offline did not read the layout again")
	}
}

// TestAutoOnlineLinkedLate: with the kernel's auto-online, a large DIMM's blocks are all added and
// onlined before the kernel links them to their device, longer after the first was added than
// Pending: the device still arrives once the links appear.
func TestAutoOnlineLinkedLate(t *testing.T) {
	f := newFixture(t)
	tr, rec, _ := startTracker(t, f, nil) // Pending 1 s
	f.addBlocks(64, 71)
	for b := 64; b <= 71; b++ {
		tr.Added(b, time.Now())
	}
	time.Sleep(1200 * time.Millisecond) // the kernel onlines them, slowly
	for b := 64; b <= 71; b++ {
		arrive(tr, b, uint64(b))
	}
	time.Sleep(50 * time.Millisecond) // the agent keeps up: it has read the last online before the links
	f.link("PNP0C80:00", 64, 71)
	rec.waitList(t, "arrival PNP0C80:00 blocks 64-71 at 0x200000000 size 1024M")
}

// TestDeviceOrderFollowsBlocks: the device notifications of one evaluation come in the order of
// the block notifications that caused them. A request that takes two DIMMs offline, the first
// vetoed half way and rolled back: the first device's removal is seen alone, then its block's
// arrival and the second device's first removal in one evaluation; the first device arrives
// again before the second goes, as its blocks did.
func TestDeviceOrderFollowsBlocks(t *testing.T) {
	f := newFixture(t)
	f.addBlocks(0, 7)
	f.addBlocks(32, 35)
	f.link("PNP0C80:00", 32, 33)
	f.link("PNP0C80:01", 34, 35)
	tr, rec, evaluate := stepTracker(t, f, 0, 1, 2, 3, 4, 5, 6, 7, 32, 33, 34, 35)
	leave(tr, 33, 10)
	evaluate()
	arrive(tr, 33, 11)
	leave(tr, 35, 12)
	evaluate()
	want := []string{
		"removal PNP0C80:00 blocks 32-33 at 0x100000000 size 256M",
		"arrival PNP0C80:00 blocks 32-33 at 0x100000000 size 256M",
		"removal PNP0C80:01 blocks 34-35 at 0x110000000 size 256M",
	}
	if m := rec.mismatch(want...); m != "" {
		t.Error(m)
	}
}

// TestRemovalFollowsFirstLostBlock: a device whose blocks go offline highest first (as a
// memory-device offline request takes them) is removed on the first block that went, not on the
// lowest one: the removal carries that block's SEQNUM and comes before what followed it in the
// same evaluation (here another device's arrival).
func TestRemovalFollowsFirstLostBlock(t *testing.T) {
	f := newFixture(t)
	f.addBlocks(32, 35)
	f.link("PNP0C80:00", 32, 33)
	f.link("PNP0C80:01", 34, 35)
	tr, rec, evaluate := stepTracker(t, f, 32, 33, 34, 35)
	leave(tr, 35, 5)
	evaluate()
	leave(tr, 33, 10) // PNP0C80:00 goes, highest block first
	arrive(tr, 35, 11)
	leave(tr, 32, 12)
	evaluate()
	want := []string{
		"removal PNP0C80:01 blocks 34-35 at 0x110000000 size 256M",
		"removal PNP0C80:00 blocks 32-33 at 0x100000000 size 256M",
		"arrival PNP0C80:01 blocks 34-35 at 0x110000000 size 256M",
	}
	if m := rec.mismatch(want...); m != "" {
		t.Fatal(m)
	}
	if got := rec.got[1].Seqnum; got != 10 {
		t.Errorf("removal of PNP0C80:00: seqnum %d; want 10, that of block 33, the first to go", got)
	}
}

// TestUnlinkedBlockStopsWaiting: a block the kernel added that no device claims (memory added
// through probe or a balloon driver) is waited for once as added and once more as it comes
// online, and then no longer: taken offline and brought back later, it is not waited for again,
// which would poll the layout and hold back ACPI arrivals for a Pending each time.
func TestUnlinkedBlockStopsWaiting(t *testing.T) {
	f := newFixture(t)
	tr, _, _ := startTracker(t, f, nil) // Pending 1 s
	f.addBlocks(64, 64)
	tr.Added(64, time.Now())
	arrive(tr, 64, 1)
	pending := func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		_, ok := tr.pending[64]
		return ok
	}
	for deadline := time.Now().Add(10 * time.Second); pending(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("memory64, online and claimed by no device, is still waited for 10 s after it came online")
		}
	}
	leave(tr, 64, 2)
	arrive(tr, 64, 3)
	if pending() {
		t.Error("memory64, waited for already, is waited for again when it comes back online")
	}
}

// stepTracker returns a tracker over f seeded with blocks online, which runs no goroutine: the
// test calls evaluate for each evaluation, and sees what it published in the recorder.
func stepTracker(t *testing.T, f *fixture, blocks ...int) (*Tracker, *recorder, func()) {
	t.Helper()
	rec := &recorder{}
	tr := New(Options{Reader: NewReader(f.fs, f.iomem), Publish: rec.publish, Settle: time.Millisecond,
		Shrink: time.Millisecond, Pending: time.Second, Poll: time.Millisecond})
	var active []notify.Interface
	for _, b := range blocks {
		active = append(active, block(b))
	}
	if _, err := tr.Seed(active); err != nil {
		t.Fatal(err)
	}
	return tr, rec, func() {
		t.Helper()
		if _, err := tr.evaluate(nil); err != nil {
			t.Fatal(err)
		}
	}
}

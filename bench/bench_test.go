package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
	"github.com/hotplug-agent/hotplug-agent/state"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
	"github.com/hotplug-agent/hotplug-agent/udev"
)

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := Summarize(d)
	want := Summary{N: 100, Min: time.Millisecond, P50: 50 * time.Millisecond, P90: 90 * time.Millisecond,
		P99: 99 * time.Millisecond, Max: 100 * time.Millisecond, Mean: 50500 * time.Microsecond}
	if s != want {
		t.Errorf("Summarize(1..100 ms) = %+v; want %+v", s, want)
	}
	if d[0] != 100*time.Millisecond {
		t.Error("Summarize sorted its argument")
	}
	if got := Summarize(nil); got != (Summary{}) {
		t.Errorf("Summarize(nil) = %+v", got)
	}
	if got := Summarize([]time.Duration{7}); got.P50 != 7 || got.P99 != 7 || got.Max != 7 {
		t.Errorf("Summarize of one value: %+v", got)
	}
}

// The fixture is a sysfs tree the agent accepts, with every CPU and block online.
func TestWriteFixture(t *testing.T) {
	root := t.TempDir()
	if err := WriteFixture(root, 16, 64); err != nil {
		t.Fatal(err)
	}
	fs, err := sysfs.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	active, err := state.New(fs).Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 16+64 {
		t.Fatalf("%d active interfaces; want 80", len(active))
	}
	b, err := fs.MemoryBlock(63)
	if err != nil {
		t.Fatal(err)
	}
	if b.PhysStart != 63<<27 || b.Size != 1<<27 || !b.Online() || b.Node != 0 {
		t.Errorf("memory63: %+v", b)
	}
	c, err := fs.CPU(0)
	if err != nil || !c.Online || c.Hotpluggable {
		t.Errorf("cpu0: %+v, %v; want online, not hotpluggable", c, err)
	}
}

func TestUnsynthesize(t *testing.T) {
	in := "online@/devices/system/cpu/cpu1\x00ACTION=online\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00" +
		"SYNTH_UUID=2b1f1a5c-54a0-4f05-a1b7-7d0cc4d1f1b2\x00SYNTH_ARG_BENCH=inproc\x00MODALIAS=cpu:type:x86\n\x00SEQNUM=42\x00"
	ev, err := udev.Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	ev.ReadAt = time.Unix(1, 2)
	if !ev.Synthetic() {
		t.Fatal("the input is not synthetic")
	}
	out, err := Unsynthesize(ev)
	if err != nil {
		t.Fatal(err)
	}
	if out.Synthetic() || out.Action != "online" || out.DevPath != "/devices/system/cpu/cpu1" || out.Subsystem != "cpu" ||
		out.Seqnum != 42 || !out.ReadAt.Equal(ev.ReadAt) {
		t.Errorf("Unsynthesize: %v (synthetic %v, read at %v)", out, out.Synthetic(), out.ReadAt)
	}
	if _, ok := out.Get(TagKey); ok {
		t.Errorf("Unsynthesize kept %s", TagKey)
	}
	if v, _ := out.Get("MODALIAS"); v != "cpu:type:x86" {
		t.Errorf("MODALIAS = %q", v)
	}
}

// TaggedSource unsynthesizes the tagged uevents it returns from ReadQueued as from Read: the
// agent's loop takes a burst through ReadQueued.
func TestIntegrationTaggedSource(t *testing.T) {
	testenv.LockCPUs(t)
	testenv.RequireRoot(t)
	c, err := udev.Listen(udev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := TaggedSource{Conn: c, Tag: "inproc"}
	uevent := "/sys/devices/system/cpu/cpu0/uevent"
	ids := []string{uuid.NewString(), uuid.NewString()}
	for _, id := range ids {
		if err := os.WriteFile(uevent, []byte("online "+id+" BENCH=inproc"), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Unsynthesized, the events no longer carry their SYNTH_UUID: the tagged ones are told apart
	// from others' by their DEVPATH and action.
	isOurs := func(ev udev.Event) bool {
		return ev.DevPath == "/devices/system/cpu/cpu0" && ev.Action == "online" && !ev.Synthetic()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		ev, err := src.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if isOurs(ev) {
			break
		}
	}
	for {
		ev, ok, err := src.ReadQueued()
		if err != nil || !ok {
			t.Fatalf("ReadQueued: ok=%v, %v; want the second tagged uevent, unsynthesized", ok, err)
		}
		if isOurs(ev) {
			return
		}
	}
}

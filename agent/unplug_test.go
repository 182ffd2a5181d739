package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/control"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// TestDeviceOfflineProgress: a memory device's offline on request writes a progress line per
// block, highest first, with the memory freed so far, and its result says what it freed; a
// request cancelled after its first block does not begin the next, brings the first back online
// with a rollback line and frees nothing.
func TestDeviceOfflineProgress(t *testing.T) {
	root := fixture(t)
	testenv.LinkMemoryDevice(t, root, "PNP0C80:00", 32, 33)
	a, _, _, _ := runAgent(t, Options{SysfsPath: root, StatePath: filepath.Join(t.TempDir(), "state.json")})
	const block = 128 << 20
	device := control.Target{Kind: control.KindMemoryDevice, ID: "PNP0C80:00"}
	line := func(p control.Progress) string {
		return fmt.Sprintf("memory%d %s rollback=%v %s %d/%d freed=%dM", p.Block, p.State, p.Rollback, p.Result, p.Done, p.Of, p.FreedBytes>>20)
	}

	var got []string
	r := a.handleControl(t.Context(), control.OpOffline, device, control.Peer{}, func(p control.Progress) { got = append(got, line(p)) })
	if r.Response != control.Success || r.FreedBytes != 2*block || r.FreedBlocks != 2 {
		t.Errorf("offline memory-device = %+v; want success, 256 MiB and 2 blocks freed", r)
	}
	want := []string{"memory33 offline rollback=false success 1/2 freed=128M", "memory32 offline rollback=false success 2/2 freed=256M"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	for _, b := range []string{"memory32", "memory33"} {
		if s := strings.TrimSpace(readAttr(t, root, "devices/system/memory/"+b+"/state")); s != "offline" {
			t.Errorf("%s is %q after the offline; want offline", b, s)
		}
	}

	// Offline already: nothing to do, nothing freed.
	got = nil
	r = a.handleControl(t.Context(), control.OpOffline, device, control.Peer{}, func(p control.Progress) { got = append(got, line(p)) })
	if r.Response != control.Success || r.FreedBytes != 0 || len(got) != 2 {
		t.Errorf("offline memory-device a second time = %+v, progress %q; want success, nothing freed, a line per block", r, got)
	}

	writeAttr(t, root, "devices/system/memory/memory32/state", "online")
	writeAttr(t, root, "devices/system/memory/memory33/state", "online")
	stopped := errors.New("cancelled by the client")
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	got = nil
	r = a.handleControl(ctx, control.OpOffline, device, control.Peer{}, func(p control.Progress) {
		got = append(got, line(p))
		cancel(stopped)
	})
	want = []string{"memory33 offline rollback=false success 1/2 freed=128M", "memory33 online rollback=true success 0/2 freed=0M"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("progress of the cancelled request (-want +got):\n%s", diff)
	}
	if r.Response != control.Failed || r.FreedBytes != 0 ||
		r.Error != "memory-device PNP0C80:00: memory 32: not begun: cancelled by the client (memory blocks 33, taken offline first, are online again)" {
		t.Errorf("the cancelled request = %+v; want failed, memory 32 not begun, memory 33 online again, nothing freed", r)
	}
	for _, b := range []string{"memory32", "memory33"} {
		if s := strings.TrimSpace(readAttr(t, root, "devices/system/memory/"+b+"/state")); s != "online" {
			t.Errorf("%s is %q after the cancelled request; want online", b, s)
		}
	}
}

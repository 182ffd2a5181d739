package online

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// kernelTree makes a sysfs tree with the kernel's onlining settings; without policy, the kernel
// has no online_policy parameter (before 5.15).
func kernelTree(t *testing.T, auto, policy, ratio string) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, v string) {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(autoOnlineBlocksFile, auto)
	if policy != "" {
		write(onlinePolicyFile, policy)
		write(autoMovableRatioFile, ratio)
	}
	return root
}

func settings(t *testing.T, root string) KernelSettings {
	t.Helper()
	s, err := ReadKernelSettings(root)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKernelTakeover(t *testing.T) {
	orig := KernelSettings{AutoOnlineBlocks: "offline", OnlinePolicy: "contig-zones", AutoMovableRatio: "301"}
	planned := Policy{Memory: Planned, MovableRatio: 301}
	for _, tc := range []struct {
		name   string
		policy Policy
		want   KernelSettings
	}{
		{"auto-movable at the ratio", Policy{Memory: Kernel, MovableRatio: 400}, KernelSettings{AutoOnlineBlocks: "online", OnlinePolicy: "auto-movable", AutoMovableRatio: "400"}},
		{"auto-movable by name", Policy{Memory: Kernel, MovableRatio: 301, KernelOnline: KernelAutoMovable}, KernelSettings{AutoOnlineBlocks: "online", OnlinePolicy: "auto-movable", AutoMovableRatio: "301"}},
		{"online_movable", Policy{Memory: Kernel, MovableRatio: 301, KernelOnline: OnlineMovable}, KernelSettings{AutoOnlineBlocks: "online_movable", OnlinePolicy: "contig-zones", AutoMovableRatio: "301"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := kernelTree(t, "offline", "contig-zones", "301")
			file := filepath.Join(t.TempDir(), "state.json.kernel")
			k, err := NewKernelTakeover(root, file, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := k.Sync(tc.policy); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, settings(t, root)); diff != "" {
				t.Errorf("configured (-want +got):\n%s", diff)
			}
			if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("the settings found are not on file, the owner's alone: %v, %v", st, err)
			}
			// A reload that keeps the policy keeps what was found, not what the agent wrote.
			if err := k.Sync(tc.policy); err != nil {
				t.Fatal(err)
			}
			if err := k.Sync(planned); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(orig, settings(t, root)); diff != "" {
				t.Errorf("put back (-want +got):\n%s", diff)
			}
			if _, err := os.Stat(file); !os.IsNotExist(err) {
				t.Errorf("the file of the settings found is still there: %v", err)
			}
			if err := k.Restore(); err != nil {
				t.Errorf("a second Restore: %v", err)
			}
		})
	}
}

// TestKernelTakeoverLeavesWhatItFound: kernel_online online_movable, online_kernel or online sets
// auto_online_blocks alone, and the kernel's online policy and ratio are as the agent found them,
// also after a reload from auto-movable, or a start after an agent with auto-movable was killed:
// as a first start with that configuration leaves them.
func TestKernelTakeoverLeavesWhatItFound(t *testing.T) {
	orig := KernelSettings{AutoOnlineBlocks: "offline", OnlinePolicy: "contig-zones", AutoMovableRatio: "301"}
	online := Policy{Memory: Kernel, MovableRatio: 400, KernelOnline: Online}
	want := KernelSettings{AutoOnlineBlocks: "online", OnlinePolicy: "contig-zones", AutoMovableRatio: "301"}
	for _, killed := range []bool{false, true} {
		t.Run(map[bool]string{false: "reload", true: "after a kill"}[killed], func(t *testing.T) {
			root := kernelTree(t, "offline", "contig-zones", "301")
			file := filepath.Join(t.TempDir(), "state.json.kernel")
			k, err := NewKernelTakeover(root, file, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := k.Sync(Policy{Memory: Kernel, MovableRatio: 400}); err != nil {
				t.Fatal(err)
			}
			if killed {
				if k, err = NewKernelTakeover(root, file, nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := k.Sync(online); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, settings(t, root)); diff != "" {
				t.Errorf("kernel_online: online after auto-movable (-want +got):\n%s", diff)
			}
			if err := k.Restore(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(orig, settings(t, root)); diff != "" {
				t.Errorf("put back (-want +got):\n%s", diff)
			}
		})
	}
}

// TestKernelTakeoverAfterAKill: an agent killed while it had the kernel configured is followed by
// one that puts the settings back, or keeps configuring and puts back the first ones later.
func TestKernelTakeoverAfterAKill(t *testing.T) {
	orig := KernelSettings{AutoOnlineBlocks: "offline", OnlinePolicy: "contig-zones", AutoMovableRatio: "301"}
	for _, next := range []Policy{{Memory: None}, {Memory: Kernel, MovableRatio: 200}} {
		t.Run(next.Memory, func(t *testing.T) {
			root := kernelTree(t, "offline", "contig-zones", "301")
			file := filepath.Join(t.TempDir(), "state.json.kernel")
			k, _ := NewKernelTakeover(root, file, nil)
			if err := k.Sync(Policy{Memory: Kernel, MovableRatio: 500}); err != nil {
				t.Fatal(err)
			}
			// Killed: nothing put back. The next start:
			k2, err := NewKernelTakeover(root, file, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := k2.Sync(next); err != nil {
				t.Fatal(err)
			}
			if next.Memory == Kernel {
				if got := settings(t, root); got.AutoMovableRatio != "200" || got.AutoOnlineBlocks != "online" {
					t.Errorf("configured %+v; want online at 200%%", got)
				}
				if err := k2.Restore(); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(orig, settings(t, root)); diff != "" {
				t.Errorf("put back (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKernelTakeoverRefusals(t *testing.T) {
	// A kernel without the auto-movable online policy: nothing is written, and the error says
	// what to write instead.
	root := kernelTree(t, "offline", "", "")
	k, _ := NewKernelTakeover(root, "", nil)
	err := k.Sync(Policy{Memory: Kernel, MovableRatio: 301})
	if err == nil || !strings.Contains(err.Error(), "online.kernel_online: auto-movable: this kernel has no memory_hotplug online_policy") {
		t.Errorf("Sync on a kernel without online_policy = %v", err)
	}
	if got := settings(t, root); got != (KernelSettings{AutoOnlineBlocks: "offline"}) {
		t.Errorf("settings %+v after a refused Sync", got)
	}
	// There, online_movable works, and without a file of what was found it is put back on
	// Restore alone.
	if err := k.Sync(Policy{Memory: Kernel, KernelOnline: OnlineMovable}); err != nil {
		t.Fatal(err)
	}
	if got := settings(t, root).AutoOnlineBlocks; got != "online_movable" {
		t.Errorf("auto_online_blocks %q; want online_movable", got)
	}
	if err := k.Restore(); err != nil || settings(t, root).AutoOnlineBlocks != "offline" {
		t.Errorf("Restore: %v, %+v", err, settings(t, root))
	}
	// A file that is not the settings an agent saved stops the start.
	file := filepath.Join(t.TempDir(), "state.json.kernel")
	os.WriteFile(file, []byte("{}"), 0o600)
	if _, err := NewKernelTakeover(root, file, nil); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("NewKernelTakeover with an empty file = %v; want a one-line error", err)
	}
	// A machine without memory hotplug.
	if _, err := ReadKernelSettings(t.TempDir()); err == nil {
		t.Error("ReadKernelSettings without auto_online_blocks succeeded")
	}
}

// At a first start the state file's directory may not exist yet: the settings found are kept
// there all the same, and put back.
func TestKernelTakeoverMakesTheStateDirectory(t *testing.T) {
	root := kernelTree(t, "offline", "contig-zones", "301")
	file := filepath.Join(t.TempDir(), "not", "yet", "state.json.kernel")
	k, err := NewKernelTakeover(root, file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Sync(Policy{Memory: Kernel, MovableRatio: 301}); err != nil {
		t.Fatalf("Sync with the state directory missing: %v", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the settings found are not kept: %v", err)
	}
	if err := k.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := settings(t, root).AutoOnlineBlocks; got != "offline" {
		t.Errorf("auto_online_blocks = %q after Restore; want offline", got)
	}
}

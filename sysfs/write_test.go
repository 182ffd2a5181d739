package sysfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWrites(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{
		"devices/system/cpu/possible", "devices/system/cpu/present", "devices/system/cpu/online",
		"devices/system/cpu/cpu1/online", "devices/system/memory/block_size_bytes", "devices/system/memory/memory7/state",
	} {
		p := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("0-1\n"), 0o644)
	}
	os.WriteFile(filepath.Join(root, "devices/system/memory/block_size_bytes"), []byte("8000000\n"), 0o644)
	fsys, err := NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.SetCPUOnline(1, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "devices/system/cpu/cpu1/online")); string(b) != "1" {
		t.Errorf("cpu1/online = %q; want 1", b)
	}
	if err := fsys.SetMemoryState(7, "online_movable"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "devices/system/memory/memory7/state")); string(b) != "online_movable" {
		t.Errorf("memory7/state = %q; want online_movable", b)
	}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"absent CPU", fsys.SetCPUOnline(5, true), "cpu5/online: no such file or directory"},
		{"negative CPU", fsys.SetCPUOnline(-1, true), "invalid CPU number -1"},
		{"bad state", fsys.SetMemoryState(7, "../../x"), `invalid memory block state "../../x"`},
		{"absent block", fsys.SetMemoryState(8, "online"), "memory8/state: no such file or directory"},
	} {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: error %v; want one containing %q", tt.name, tt.err, tt.want)
		}
	}
}

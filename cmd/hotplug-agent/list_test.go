//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// procFixture writes a procfs tree with the meminfo and zoneinfo of a 512 MiB QEMU guest at
// boot (headroom/testdata) and its kernel release.
func procFixture(t *testing.T) string {
	t.Helper()
	proc := filepath.Join(t.TempDir(), "proc")
	for name, src := range map[string]string{"zoneinfo": "zoneinfo-guest-512M-boot", "meminfo": "meminfo-guest-512M-boot"} {
		b, err := os.ReadFile(filepath.Join("../../headroom/testdata", src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(proc, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(proc, "sys/kernel"), 0o755)
	os.WriteFile(filepath.Join(proc, "sys/kernel/osrelease"), []byte("6.1.0-57-amd64\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "iomem"), []byte("00000000-00000fff : Reserved\n"), 0o644)
	return proc
}

// TestListHeadroom: list ends with the memory hot-add headroom, computed with
// --memory.headroom-reserve-bytes; --json prints the array alone; without zoneinfo the list
// stands and stderr says why there is no headroom.
func TestListHeadroom(t *testing.T) {
	if os.Getpagesize() != 4096 {
		testenv.Unavailable(t, "the fixtures are of a kernel with 4 KiB pages; this one has %d", os.Getpagesize())
	}
	sys, proc := testenv.SysfsFixture(t, "../.."), procFixture(t)
	for _, tt := range []struct {
		name     string
		args     []string
		last     string
		stderr   string
		noZones  bool
		jsonOnly bool
	}{
		{"default reserve", nil,
			"hot-add headroom: 17664M (138 blocks of 128M): a hot-add takes 16.2M of kernel memory per GiB (memmap from kernel memory); 344M of kernel memory is free above the watermarks, 64M is kept in reserve", "", false, false},
		{"no reserve", []string{"--memory.headroom-reserve-bytes=0"},
			"hot-add headroom: 21760M (170 blocks of 128M): a hot-add takes 16.2M of kernel memory per GiB (memmap from kernel memory); 344M of kernel memory is free above the watermarks, 0M is kept in reserve", "", false, false},
		{"a reserve above what is free", []string{"--memory.headroom-reserve-bytes=1073741824"},
			"hot-add headroom: 0M (0 blocks of 128M): a hot-add takes 16.2M of kernel memory per GiB (memmap from kernel memory); 344M of kernel memory is free above the watermarks, 1024M is kept in reserve", "", false, false},
		{"json", []string{"--json"}, "]", "", false, true},
		{"no zoneinfo", []string{"--blocks"}, "memory     33      online  0     0x0000000108000000-0x000000010fffffff  128M  Normal  -       /sys/devices/system/memory/memory33",
			"hotplug-agent list: no memory hot-add headroom: headroom: open " + proc + "/zoneinfo: no such file or directory\n", true, false},
		{"no zoneinfo, ranges", nil, "0x0000000100000000-0x000000010fffffff  256M  online  32-33  0     Normal  -",
			"hotplug-agent list: no memory hot-add headroom: headroom: open " + proc + "/zoneinfo: no such file or directory\n", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.noZones {
				os.Rename(filepath.Join(proc, "zoneinfo"), filepath.Join(proc, "zoneinfo.away"))
				defer os.Rename(filepath.Join(proc, "zoneinfo.away"), filepath.Join(proc, "zoneinfo"))
			}
			var stdout, stderr bytes.Buffer
			args := append([]string{"list", "--path.sysfs=" + sys, "--path.procfs=" + proc}, tt.args...)
			if code := run(args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			lines := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
			if got := lines[len(lines)-1]; got != tt.last {
				t.Errorf("last line:\n%s\nwant:\n%s", got, tt.last)
			}
			if tt.jsonOnly && strings.Contains(stdout.String(), "headroom") {
				t.Errorf("--json prints the headroom:\n%s", stdout.String())
			}
			if stderr.String() != tt.stderr {
				t.Errorf("stderr %q; want %q", stderr.String(), tt.stderr)
			}
		})
	}
}

package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// SysfsFixture copies the sysfs fixture of a small VM (sysfs/testdata/vm/sys: two CPUs, memory
// blocks 0, 1, 23, 32 and 33, all online) into a temporary directory the test may change, and
// returns its root. repo is the path from the test's package to the repository's top.
func SysfsFixture(t testing.TB, repo string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "sys")
	if out, err := exec.Command("cp", "-a", filepath.Join(repo, "sysfs/testdata/vm/sys"), dst).CombinedOutput(); err != nil {
		t.Fatalf("copy the sysfs fixture: %v: %s", err, out)
	}
	return dst
}

// LinkMemoryDevice makes blocks of the sysfs tree at root an ACPI memory device named id (such
// as PNP0C80:00), as the kernel does: the device's directory (created if need be) listed in
// bus/acpi/devices, and, by acpi_bind_one, a physical_node, physical_node1, ... link from it to
// each block and a firmware_node link from each block back. Called again for the same device, it
// binds more blocks. It returns the device's /sys path.
func LinkMemoryDevice(t testing.TB, root, id string, blocks ...int) string {
	t.Helper()
	const parent = "devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04"
	dev := filepath.Join(root, parent, id)
	link := func(from, to string) {
		t.Helper()
		rel, err := filepath.Rel(filepath.Dir(from), to)
		if err == nil {
			err = os.Symlink(rel, from)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(dev); err != nil {
		if err := os.MkdirAll(dev, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, "bus/acpi/devices"), 0o755); err != nil {
			t.Fatal(err)
		}
		link(filepath.Join(root, "bus/acpi/devices", id), dev)
	}
	for _, b := range blocks {
		name := "physical_node"
		for k := 1; ; k++ {
			if _, err := os.Lstat(filepath.Join(dev, name)); err != nil {
				break
			}
			name = fmt.Sprintf("physical_node%d", k)
		}
		block := filepath.Join(root, fmt.Sprintf("devices/system/memory/memory%d", b))
		link(filepath.Join(dev, name), block)
		link(filepath.Join(block, "firmware_node"), dev)
	}
	return "/sys/" + parent + "/" + id
}

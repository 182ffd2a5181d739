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
// as PNP0C80:00), as the kernel's acpi_bind_one does: each block's firmware_node points to the
// device's directory, which it creates. It returns the device's /sys path.
func LinkMemoryDevice(t testing.TB, root, id string, blocks ...int) string {
	t.Helper()
	const parent = "devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04"
	dev := filepath.Join(root, parent, id)
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		dir := filepath.Join(root, fmt.Sprintf("devices/system/memory/memory%d", b))
		rel, err := filepath.Rel(dir, dev)
		if err == nil {
			err = os.Symlink(rel, filepath.Join(dir, "firmware_node"))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return "/sys/" + parent + "/" + id
}

package bench

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFixture writes under root a sysfs tree of cpus CPUs and blocks memory blocks of 128 MiB,
// all online, on NUMA node 0, laid out as this machine's kernel lays them out (cpu0 without an
// online file; each directory with the same entries as the real ones, so that listing one costs
// what it costs on /sys; node0 linking every CPU and block, as each links node0). It is what the start-up benchmark points --path.sysfs at to stand for a
// large machine. root must exist and be empty.
func WriteFixture(root string, cpus, blocks int) error {
	if cpus < 1 || blocks < 0 {
		return fmt.Errorf("fixture: %d CPUs and %d memory blocks: want at least 1 CPU", cpus, blocks)
	}
	w := fixtureWriter{root: root}
	list := "0\n"
	if cpus > 1 {
		list = fmt.Sprintf("0-%d\n", cpus-1)
	}
	cpu := "devices/system/cpu/"
	for _, name := range []string{"possible", "present", "online"} {
		w.file(cpu+name, list)
	}
	w.file(cpu+"offline", "\n")
	w.file(cpu+"kernel_max", "8191\n")
	w.dir(cpu + "cpufreq")
	w.dir(cpu + "cpuidle")
	w.dir(cpu + "vulnerabilities")
	w.dir("devices/system/node/node0")
	for n := range cpus {
		d := fmt.Sprintf("%scpu%d/", cpu, n)
		for _, sub := range []string{"cache", "cpuidle", "hotplug", "power", "topology"} {
			w.dir(d + sub)
		}
		w.file(d+"uevent", "")
		w.file(d+"cpu_capacity", "1024\n")
		w.link(d+"subsystem", "../../../../bus/cpu")
		w.link(d+"node0", "../../node/node0")
		w.link(fmt.Sprintf("devices/system/node/node0/cpu%d", n), "../../cpu/cpu"+fmt.Sprint(n))
		if n > 0 {
			w.file(d+"online", "1\n")
		}
	}
	mem := "devices/system/memory/"
	w.file(mem+"block_size_bytes", "8000000\n")
	w.file(mem+"auto_online_blocks", "offline\n")
	for n := range blocks {
		d := fmt.Sprintf("%smemory%d/", mem, n)
		w.dir(d + "power")
		w.file(d+"uevent", "")
		w.file(d+"state", "online\n")
		w.file(d+"online", "1\n")
		w.file(d+"phys_index", fmt.Sprintf("%08x\n", n))
		w.file(d+"phys_device", "0\n")
		w.file(d+"valid_zones", "Normal\n")
		w.file(d+"removable", "1\n")
		w.link(d+"subsystem", "../../../../bus/memory")
		w.link(d+"node0", "../../node/node0")
		w.link(fmt.Sprintf("devices/system/node/node0/memory%d", n), "../../memory/memory"+fmt.Sprint(n))
	}
	return w.err
}

// fixtureWriter writes files under root, keeping the first error.
type fixtureWriter struct {
	root string
	err  error
}

func (w *fixtureWriter) dir(rel string) {
	if w.err == nil {
		w.err = os.MkdirAll(filepath.Join(w.root, rel), 0o755)
	}
}

func (w *fixtureWriter) file(rel, content string) {
	w.dir(filepath.Dir(rel))
	if w.err == nil {
		w.err = os.WriteFile(filepath.Join(w.root, rel), []byte(content), 0o644)
	}
}

func (w *fixtureWriter) link(rel, target string) {
	w.dir(filepath.Dir(rel))
	if w.err == nil {
		w.err = os.Symlink(target, filepath.Join(w.root, rel))
	}
}

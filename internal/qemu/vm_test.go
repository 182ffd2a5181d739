//go:build linux

package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestConfigArgs(t *testing.T) {
	dir := t.TempDir()
	vmlinuz := filepath.Join(dir, "vmlinuz")
	os.WriteFile(vmlinuz, []byte("x"), 0o644)
	c := Config{
		Kernel:    Kernel{Vmlinuz: vmlinuz},
		Initramfs: "/tmp/initrd.cpio",
		Append:    []string{"memhp_default_state=offline"},
		Forwards:  []Forward{{HostPort: 40000, GuestPort: 19100}},
		Dir:       dir,
	}
	args := c.Args("/a/serial.log", "/s/qmp.sock")
	line := strings.Join(args, " ")
	for _, want := range []string{
		"-machine q35 -accel tcg",
		"-smp 1,maxcpus=4",
		"-m 512M,slots=4,maxmem=4G",
		"-kernel " + vmlinuz,
		"-initrd /tmp/initrd.cpio",
		"-chardev file,id=serial0,path=/a/serial.log -serial chardev:serial0",
		"-chardev socket,id=qmp0,path=/s/qmp.sock,server=on,wait=off -mon chardev=qmp0,mode=control",
		"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:40000-:19100",
		"-device virtio-net-pci,netdev=net0,romfile=",
		"-device pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=0x10",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	i := slices.Index(args, "-append")
	if i < 0 || !strings.HasPrefix(args[i+1], "console=ttyS0 ") || !strings.HasSuffix(args[i+1], " memhp_default_state=offline") {
		t.Errorf("kernel command line: %q", args[i+1])
	}
	if slices.Contains(args, "-bios") {
		t.Errorf("no vmlinux: want the default firmware, got %s", line)
	}

	c.Kernel.Vmlinux = vmlinuz + ".elf"
	c.MaxCPUs, c.Memory, c.RootPorts = 8, "1G", -1
	args = c.Args("/a/serial.log", "/s/qmp.sock")
	line = strings.Join(args, " ")
	if _, err := os.Stat(qbootROM); err == nil && !strings.Contains(line, "-bios "+qbootROM+" -kernel "+c.Kernel.Vmlinux) {
		t.Errorf("vmlinux and qboot present: want a PVH boot, got %s", line)
	}
	if !strings.Contains(line, "-smp 1,maxcpus=8") || !strings.Contains(line, "-m 1G,slots=4,maxmem=4G") || strings.Contains(line, "pcie-root-port") {
		t.Errorf("overrides not applied: %s", line)
	}
}

func TestConfigArgsDrivesAndGuestAgent(t *testing.T) {
	c := Config{
		Kernel:    Kernel{Vmlinuz: "/k/vmlinuz"},
		Initramfs: "/tmp/initrd.cpio",
		Drives: []Drive{
			{Path: "/d/root.ext4"},
			{Path: "/d/payload.ext4", ReadOnly: true},
			{Path: "/d/scratch.ext4", Snapshot: true},
		},
		GuestAgent: true,
		NoPVH:      true,
	}
	line := strings.Join(c.Args("/a/serial.log", "/s/qmp.sock"), " ")
	for _, want := range []string{
		"-drive file=/d/root.ext4,format=raw,if=none,id=disk0,cache=unsafe -device virtio-blk-pci,drive=disk0,bus=pcie.0,addr=0x18",
		"-drive file=/d/payload.ext4,format=raw,if=none,id=disk1,readonly=on -device virtio-blk-pci,drive=disk1,bus=pcie.0,addr=0x19",
		"-drive file=/d/scratch.ext4,format=raw,if=none,id=disk2,snapshot=on -device virtio-blk-pci,drive=disk2,bus=pcie.0,addr=0x1a",
		"-chardev socket,id=qga0,path=/s/qga.sock,server=on,wait=off -device virtio-serial-pci,id=vser0 -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
}

func TestFindKernel(t *testing.T) {
	dir := t.TempDir()
	if _, err := FindKernel(dir); err == nil || !strings.Contains(err.Error(), "qemu-deps.sh") {
		t.Errorf("empty cache: %v; want a hint to run scripts/qemu-deps.sh", err)
	}
	k := filepath.Join(dir, "kernel")
	os.MkdirAll(filepath.Join(k, "modules"), 0o755)
	os.WriteFile(filepath.Join(k, "version"), []byte("6.1.0-56-amd64\n"), 0o644)
	os.WriteFile(filepath.Join(k, "vmlinuz"), []byte("x"), 0o644)
	got, err := FindKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != "6.1.0-56-amd64" || got.Vmlinux != "" || got.Modules != filepath.Join(k, "modules") {
		t.Errorf("FindKernel = %+v", got)
	}
}

// A guest with a root device: the init's settings name it, and no agent is packed.
func TestGuestWriteInitramfsRoot(t *testing.T) {
	dir := t.TempDir()
	init := filepath.Join(dir, "init")
	os.WriteFile(init, []byte("#!init"), 0o755)
	out := filepath.Join(dir, "initramfs.cpio")
	g := Guest{Init: init, Kernel: Kernel{Modules: dir}, Modules: []string{}, Root: "/dev/vda"}
	if err := g.WriteInitramfs(out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range readNewc(t, b) {
		if e.Mode&modeFmt == modeReg {
			files[e.Name] = e.Data
		}
	}
	if files["init"] != "#!init" {
		t.Errorf("init: %q", files["init"])
	}
	if diff := cmp.Diff(`{
  "root": "/dev/vda"
}`, files["etc/hotplug-guest-init.json"]); diff != "" {
		t.Errorf("the init's settings (-want +got):\n%s", diff)
	}
	for _, f := range []string{"bin/hotplug-agent", "etc/hotplug-agent/config.yaml"} {
		if _, ok := files[f]; ok {
			t.Errorf("%s packed in a guest that boots its disk", f)
		}
	}
}

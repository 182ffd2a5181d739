//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"

	"github.com/hotplug-agent/hotplug-agent/internal/qemu/kmod"
)

// GuestModules are the modules a guest needs: virtio over PCI, the NIC, and virtio-mem. Their
// dependencies are packed too.
var GuestModules = []string{"virtio_pci", "virtio_net", "virtio_mem"}

// BuildStatic builds the Go package pkg (a path like ./cmd/hotplug-agent, relative to dir) as a
// static binary at out: CGO_ENABLED=0, trimmed paths, no symbols.
func BuildStatic(ctx context.Context, dir, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// SystemModules are the modules a guest that boots a Debian disk with systemd needs in its
// initramfs: GuestModules, the disk (virtio-blk, ext4 with the crc32c its checksums load by name)
// and virtio-console for qemu-guest-agent's port. The guest's disk has no modules of its own.
var SystemModules = append(append([]string{}, GuestModules...), "virtio_blk", "virtio_console", "crc32c_generic", "ext4")

// Guest is what goes into a guest's initramfs.
type Guest struct {
	// Init is the host path of the static /init (cmd/hotplug-guest-init).
	Init string
	// Agent is the host path of the static agent, packed as /bin/hotplug-agent.
	Agent string
	// AgentConfig is /etc/hotplug-agent/config.yaml.
	AgentConfig string
	// AgentArgs are the agent's arguments after "run --config.file=... --web.listen-address=:Port".
	AgentArgs []string
	// Port is the agent's HTTP port in the guest.
	Port int
	// Kernel supplies the modules; Modules names the ones to pack (default GuestModules, or
	// SystemModules with Root), with their dependencies.
	Kernel  Kernel
	Modules []string
	// Helpers are more static programs (host paths), packed as /bin/<base name> and started
	// by the init just after the agent, without arguments, their output on the console; a
	// test's program that drives the guest from the inside. Ignored with Root.
	Helpers []string
	// Root, when set, is the guest's root device (such as /dev/vda, an ext4 disk): the init
	// switches to it and runs its /sbin/init, and no agent is packed (Agent, AgentConfig and
	// AgentArgs are ignored).
	Root string
}

// WriteInitramfs writes the guest's initramfs to the file out.
func (g Guest) WriteInitramfs(out string) error {
	mods := g.Modules
	switch {
	case mods != nil:
	case g.Root != "":
		mods = SystemModules
	default:
		mods = GuestModules
	}
	idx, err := kmod.Scan(g.Kernel.Modules)
	if err != nil {
		return err
	}
	ordered, err := idx.Order(mods...)
	if err != nil {
		return err
	}
	initCfg := struct {
		Agent   []string `json:"agent,omitempty"`
		Helpers []string `json:"helpers,omitempty"`
		Root    string   `json:"root,omitempty"`
	}{Root: g.Root}
	if g.Root == "" {
		initCfg.Agent = append([]string{"/bin/hotplug-agent", "run",
			"--config.file=/etc/hotplug-agent/config.yaml",
			fmt.Sprintf("--web.listen-address=:%d", g.Port)}, g.AgentArgs...)
		for _, h := range g.Helpers {
			initCfg.Helpers = append(initCfg.Helpers, path.Join("/bin", filepath.Base(h)))
		}
	}
	initJSON, err := json.MarshalIndent(initCfg, "", "  ")
	if err != nil {
		return err
	}

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	a := NewInitramfs(f)
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/bin", "/etc/hotplug-agent", "/lib/modules"} {
		a.Dir(d, 0o755)
	}
	a.CharDev("/dev/console", 0o600, 5, 1)
	a.CharDev("/dev/null", 0o666, 1, 3)
	a.CopyFile("/init", 0o755, g.Init)
	if g.Root == "" {
		a.CopyFile("/bin/hotplug-agent", 0o755, g.Agent)
		for _, h := range g.Helpers {
			a.CopyFile(path.Join("/bin", filepath.Base(h)), 0o755, h)
		}
		a.File("/etc/hotplug-agent/config.yaml", 0o644, []byte(g.AgentConfig))
	}
	a.File("/etc/hotplug-guest-init.json", 0o644, initJSON)
	for _, m := range ordered {
		a.CopyFile(path.Join("/lib/modules", filepath.Base(m.Path)), 0o644, m.Path)
	}
	err = a.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("initramfs %s: %w", out, err)
	}
	return nil
}

//go:build linux

// Command hotplug-guest-init is /init of the QEMU guests of the end-to-end tests (./e2e). As
// process 1 it mounts proc, sysfs, devtmpfs and tmpfs, loads the kernel modules packed under
// /lib/modules (each after those it depends on), brings up lo and the NIC with QEMU's user-mode
// network address, runs the agent with its output on the console, reaps orphans, and powers the
// guest off when the agent exits. Its settings come from /etc/hotplug-guest-init.json (see
// Config); every step is logged on the console as "hotplug-guest-init: ..." with the time since
// boot.
//
// With a root device in its settings it is the initramfs of a guest that boots a disk: after the
// modules and the network it mounts the device, moves /dev, /proc, /sys and /run onto it and
// switches to it, executing its /sbin/init (systemd) as process 1, as switch_root does.
//
// Run as any other process it is a small helper for exec callbacks, since the guest has no shell:
//
//	hotplug-guest-init sleep DURATION   prints the notification it was called for, sleeps, exits 0
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/internal/qemu/kmod"
)

// ConfigPath is where the harness puts the init's settings.
const ConfigPath = "/etc/hotplug-guest-init.json"

// Config is the init's settings; every field has a default.
type Config struct {
	// Agent is the agent's argument vector.
	Agent []string `json:"agent"`
	// Helpers are programs started without arguments just after the agent, their output on the
	// console (a test's driver inside the guest).
	Helpers []string `json:"helpers"`
	// Modules is the folder of .ko files to load (all of them). Default /lib/modules.
	Modules string `json:"modules"`
	// Address is the NIC's address with prefix length; Gateway the default route. Defaults:
	// QEMU user networking's 10.0.2.15/24 and 10.0.2.2.
	Address string `json:"address"`
	Gateway string `json:"gateway"`
	// Root is the block device of a root file system to switch to (such as /dev/vda) instead of
	// running the agent; RootFSType its type (default ext4), mounted read-write; Init the program
	// executed there as process 1 (default /sbin/init).
	Root       string `json:"root"`
	RootFSType string `json:"rootfstype"`
	Init       string `json:"init"`
}

// DefaultAgent is the agent's command line when the configuration names none.
var DefaultAgent = []string{"/bin/hotplug-agent", "run", "--config.file=/etc/hotplug-agent/config.yaml", "--web.listen-address=:19100"}

func main() {
	if os.Getpid() != 1 {
		os.Exit(helper(os.Args[1:]))
	}
	if err := run(); err != nil {
		logf("FATAL: %v", err)
	}
	poweroff()
}

// logf writes one line to the console with the time since boot.
func logf(format string, args ...any) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	fmt.Fprintf(os.Stdout, "[%5d.%06d] hotplug-guest-init: %s\n", ts.Sec, ts.Nsec/1000, fmt.Sprintf(format, args...))
}

func poweroff() {
	unix.Sync()
	logf("powering off")
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		logf("power off: %v", err)
	}
	// Process 1 must not exit: the kernel would panic (and, with panic=-1, reboot, which QEMU's
	// -no-reboot turns into an exit anyway).
	select {}
}

func run() error {
	if err := mounts(); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if err := loadModules(cfg.Modules); err != nil {
		return err
	}
	if err := network(cfg.Address, cfg.Gateway); err != nil {
		return err
	}
	if cfg.Root != "" {
		return switchRoot(cfg.Root, cfg.RootFSType, cfg.Init)
	}
	return runAgent(cfg.Agent, cfg.Helpers)
}

// switchRoot mounts dev (of type fstype) read-write, moves the API file systems onto it, makes it
// the root and executes init there as process 1. It returns only on failure.
func switchRoot(dev, fstype, init string) error {
	const newRoot = "/newroot"
	// The disk's driver probes while its module loads; its node appears in devtmpfs then.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(dev); err == nil {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("root device %s did not appear within 10 s (is its driver's module packed?): %w", dev, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, newRoot, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, fstype, newRoot, err)
	}
	if _, err := os.Lstat(newRoot + init); err != nil {
		return fmt.Errorf("no %s on %s: %w", init, dev, err)
	}
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		if err := unix.Mount(m, newRoot+m, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to %s%s: %w", m, newRoot, m, err)
		}
	}
	if err := unix.Unmount("/tmp", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount /tmp: %w", err)
	}
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot %s: %w", newRoot, err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	logf("switching to %s on %s (%s)", init, dev, fstype)
	err := unix.Exec(init, []string{init}, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"})
	return fmt.Errorf("exec %s: %w", init, err)
}

func mounts() error {
	for _, m := range []struct{ fstype, target string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}, {"tmpfs", "/run"}, {"tmpfs", "/tmp"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	logf("mounted proc, sysfs, devtmpfs, tmpfs")
	return nil
}

func loadConfig() (Config, error) {
	cfg := Config{Agent: DefaultAgent, Modules: "/lib/modules", Address: "10.0.2.15/24", Gateway: "10.0.2.2",
		RootFSType: "ext4", Init: "/sbin/init"}
	b, err := os.ReadFile(ConfigPath)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", ConfigPath, err)
	}
	if cfg.Root == "" && len(cfg.Agent) == 0 {
		return cfg, fmt.Errorf("%s: agent: empty command", ConfigPath)
	}
	return cfg, nil
}

// loadModules loads every module under dir, each after its dependencies (from .modinfo).
func loadModules(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		logf("no %s: no modules to load", dir)
		return nil
	}
	idx, err := kmod.Scan(dir)
	if err != nil {
		return err
	}
	mods, err := idx.All()
	if err != nil {
		return err
	}
	start := time.Now()
	var names []string
	for _, m := range mods {
		if err := finit(m.Path); err != nil {
			return fmt.Errorf("load module %s (%s): %w", m.Name, m.Path, err)
		}
		names = append(names, m.Name)
	}
	logf("loaded modules %s in %v", strings.Join(names, " "), time.Since(start).Round(time.Millisecond))
	return nil
}

func finit(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.FinitModule(fd, "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// network brings lo up, and the first other interface with address and a default route via gw.
func network(address, gw string) error {
	if err := ifUp("lo", nil, nil); err != nil {
		return err
	}
	ip, ipnet, err := net.ParseCIDR(address)
	if err != nil {
		return fmt.Errorf("address %q: %w", address, err)
	}
	gwIP := net.ParseIP(gw).To4()
	if gwIP == nil {
		return fmt.Errorf("gateway %q: not an IPv4 address", gw)
	}
	// The NIC's driver probes while its module loads; give the interface a moment to appear.
	var name string
	deadline := time.Now().Add(10 * time.Second)
	for name == "" {
		ents, _ := os.ReadDir("/sys/class/net")
		for _, e := range ents {
			if e.Name() != "lo" {
				name = e.Name()
				break
			}
		}
		if name == "" {
			if time.Now().After(deadline) {
				return errors.New("no network interface but lo after 10 s (is the NIC's module packed?)")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := ifUp(name, ip.To4(), net.IP(ipnet.Mask).To4()); err != nil {
		return err
	}
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	if err := addDefaultRoute(gwIP, iface.Index); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	logf("network up: lo, %s %s via %s", name, address, gw)
	return nil
}

func ifUp(name string, addr, mask net.IP) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	set := func(req uint, ip net.IP) error {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(ip); err != nil {
			return err
		}
		return unix.IoctlIfreq(fd, req, ifr)
	}
	if addr != nil {
		if err := set(unix.SIOCSIFADDR, addr); err != nil {
			return fmt.Errorf("%s: set address %s: %w", name, addr, err)
		}
		if err := set(unix.SIOCSIFNETMASK, mask); err != nil {
			return fmt.Errorf("%s: set netmask %s: %w", name, mask, err)
		}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: get flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: up: %w", name, err)
	}
	return nil
}

// runAgent starts the agent, then the helpers, with their output on the console, reaps every
// child (orphaned exec callbacks end up here) and returns when the agent has exited.
func runAgent(argv []string, helpers []string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/"}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	pid := cmd.Process.Pid
	logf("agent started: pid %d: %s", pid, strings.Join(argv, " "))
	for _, h := range helpers {
		c := exec.Command(h)
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		c.Dir = "/"
		c.Env = cmd.Env
		if err := c.Start(); err != nil {
			logf("helper %s: %v", h, err)
			continue
		}
		logf("helper started: pid %d: %s", c.Process.Pid, h)
	}
	// cmd.Wait is never called: the loop below reaps every child, the agent included.
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait: %w", err)
		}
		if p == pid {
			switch {
			case ws.Exited():
				logf("agent exited with status %d", ws.ExitStatus())
			case ws.Signaled():
				logf("agent killed by signal %v", ws.Signal())
			}
			return nil
		}
	}
}

// helper is the non-init mode: small tools for exec callbacks.
func helper(args []string) int {
	if len(args) == 2 && args[0] == "sleep" {
		d, err := time.ParseDuration(args[1])
		if err != nil {
			fmt.Fprintf(os.Stderr, "sleep: %v\n", err)
			return 2
		}
		fmt.Printf("slow callback: %s %s, sleeping %v\n", os.Getenv("HOTPLUG_EVENT"), os.Getenv("HOTPLUG_SYMBOLIC_LINK"), d)
		time.Sleep(d)
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: hotplug-guest-init sleep DURATION (as process 1 it is the guest's /init)")
	return 2
}

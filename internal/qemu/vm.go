//go:build linux

package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Kernel is a guest kernel unpacked by scripts/qemu-deps.sh into <cache>/kernel.
type Kernel struct {
	// Version is the kernel release ("6.1.0-56-amd64").
	Version string
	// Vmlinuz is the bzImage; Vmlinux the uncompressed ELF (booted through PVH), may be empty.
	Vmlinuz, Vmlinux string
	// Modules is the folder of the unpacked modules (the package's lib/modules/VERSION/kernel).
	Modules string
}

// ModuleRoot returns the root of the Go module that holds the current directory (the folder of
// its go.mod): a test runs in its package's folder.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("qemu: no go.mod in the current directory or above")
		}
		dir = parent
	}
}

// DefaultCacheDir returns the cache folder of scripts/qemu-deps.sh: $HOTPLUG_QEMU_CACHE, or
// .cache/qemu at the module root.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("HOTPLUG_QEMU_CACHE"); d != "" {
		return d, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache", "qemu"), nil
}

// FindKernel returns the kernel unpacked in cacheDir, or an error saying what is missing and how
// to get it.
func FindKernel(cacheDir string) (Kernel, error) {
	kdir := filepath.Join(cacheDir, "kernel")
	v, err := os.ReadFile(filepath.Join(kdir, "version"))
	if err != nil {
		return Kernel{}, fmt.Errorf("no guest kernel in %s (run: bash scripts/qemu-deps.sh): %w", kdir, err)
	}
	k := Kernel{
		Version: strings.TrimSpace(string(v)),
		Vmlinuz: filepath.Join(kdir, "vmlinuz"),
		Vmlinux: filepath.Join(kdir, "vmlinux"),
		Modules: filepath.Join(kdir, "modules"),
	}
	for _, p := range []string{k.Vmlinuz, k.Modules} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, fmt.Errorf("guest kernel incomplete (run: bash scripts/qemu-deps.sh): %w", err)
		}
	}
	if _, err := os.Stat(k.Vmlinux); err != nil {
		k.Vmlinux = ""
	}
	return k, nil
}

// QEMUBinary is the emulator the runner starts.
const QEMUBinary = "qemu-system-x86_64"

// QEMUVersion runs the emulator with --version and returns its major and minor version, or an
// error when it is missing.
func QEMUVersion(ctx context.Context, binary string) (major, minor int, err error) {
	if binary == "" {
		binary = QEMUBinary
	}
	out, err := exec.CommandContext(ctx, binary, "--version").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("%s --version: %w (run: bash scripts/qemu-deps.sh)", binary, err)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "version" && i+1 < len(f) {
			parts := strings.SplitN(f[i+1], ".", 3)
			major, _ = strconv.Atoi(parts[0])
			if len(parts) > 1 {
				minor, _ = strconv.Atoi(parts[1])
			}
			return major, minor, nil
		}
	}
	return 0, 0, fmt.Errorf("%s --version: no version in %q", binary, out)
}

// qbootROM is Debian's qboot firmware (qemu-system-data): with PVH it boots vmlinux in about half
// the time SeaBIOS boots a bzImage under TCG.
const qbootROM = "/usr/share/qemu/qboot.rom"

// Forward is a TCP port forwarded from the host's loopback to the guest.
type Forward struct {
	HostPort, GuestPort int
}

// Config describes a guest.
type Config struct {
	// Binary is the emulator; default QEMUBinary.
	Binary string
	Kernel Kernel
	// Initramfs is the cpio archive passed with -initrd.
	Initramfs string
	// Append is added to the kernel command line (after console=ttyS0 and the defaults).
	Append []string
	// CPUs and MaxCPUs: -smp CPUs,maxcpus=MaxCPUs. Default 1 and 4.
	CPUs, MaxCPUs int
	// Memory, Slots and MaxMem: -m Memory,slots=Slots,maxmem=MaxMem. Default 512M, 4, 4G.
	Memory string
	Slots  int
	MaxMem string
	// RootPorts is how many pcie-root-ports (ids rp0, rp1, ...) to add for hot-plugged PCIe
	// devices such as virtio-mem-pci. Default 1; -1 means none.
	RootPorts int
	// Forwards are hostfwd rules of the user-mode NIC (a virtio-net-pci device).
	Forwards []Forward
	// NoPVH boots the bzImage with the default firmware even when vmlinux and qboot are there.
	NoPVH bool
	// Drives are virtio-blk disks, in order: the guest sees /dev/vda, /dev/vdb, ...
	Drives []Drive
	// GuestAgent adds a virtio-serial port org.qemu.guest_agent.0 for qemu-guest-agent in the
	// guest, served on the host by a unix socket beside the QMP one (VM.GuestAgentSocket).
	GuestAgent bool
	// Dir holds the serial log, and the QMP socket when its path is short enough; it must exist.
	Dir string
	// Extra arguments appended to the command line.
	Extra []string
}

// Drive is a raw disk image attached as a virtio-blk device.
type Drive struct {
	// Path is the image file.
	Path string
	// ReadOnly attaches it read-only; Snapshot lets the guest write to a temporary overlay that
	// QEMU drops at exit, leaving Path unchanged. Otherwise the guest writes Path itself, with
	// cache=unsafe: the host does not flush for the guest (a test disk outlives no host crash).
	ReadOnly, Snapshot bool
}

// guestAgentSocket is the host end of the guest agent's port, beside the QMP socket.
func guestAgentSocket(qmpSocket string) string {
	return filepath.Join(filepath.Dir(qmpSocket), "qga.sock")
}

func (c *Config) defaults() {
	if c.Binary == "" {
		c.Binary = QEMUBinary
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.MaxCPUs == 0 {
		c.MaxCPUs = 4
	}
	if c.Memory == "" {
		c.Memory = "512M"
	}
	if c.Slots == 0 {
		c.Slots = 4
	}
	if c.MaxMem == "" {
		c.MaxMem = "4G"
	}
	if c.RootPorts == 0 {
		c.RootPorts = 1
	}
}

// PVH reports whether the guest boots vmlinux through PVH with qboot.
func (c Config) PVH() bool {
	if c.NoPVH || c.Kernel.Vmlinux == "" {
		return false
	}
	_, err := os.Stat(qbootROM)
	return err == nil
}

// Args returns the emulator's arguments for a guest whose serial console goes to serialLog and
// whose QMP server listens on qmpSocket.
func (c Config) Args(serialLog, qmpSocket string) []string {
	c.defaults()
	// mitigations=off, tsc=reliable and no_timer_check save about half a second of a TCG boot.
	cmdline := append([]string{"console=ttyS0", "panic=-1", "loglevel=4", "rdinit=/init",
		"mitigations=off", "tsc=reliable", "no_timer_check"}, c.Append...)
	a := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "q35", "-accel", "tcg",
		"-smp", fmt.Sprintf("%d,maxcpus=%d", c.CPUs, c.MaxCPUs),
		"-m", fmt.Sprintf("%s,slots=%d,maxmem=%s", c.Memory, c.Slots, c.MaxMem),
	}
	if c.PVH() {
		a = append(a, "-bios", qbootROM, "-kernel", c.Kernel.Vmlinux)
	} else {
		a = append(a, "-kernel", c.Kernel.Vmlinuz)
	}
	a = append(a,
		"-initrd", c.Initramfs,
		"-append", strings.Join(cmdline, " "),
		"-chardev", "file,id=serial0,path="+serialLog,
		"-serial", "chardev:serial0",
		"-chardev", "socket,id=qmp0,path="+qmpSocket+",server=on,wait=off",
		"-mon", "chardev=qmp0,mode=control",
	)
	var fwd strings.Builder
	for _, f := range c.Forwards {
		fmt.Fprintf(&fwd, ",hostfwd=tcp:127.0.0.1:%d-:%d", f.HostPort, f.GuestPort)
	}
	a = append(a,
		"-netdev", "user,id=net0"+fwd.String(),
		// romfile= : no iPXE option ROM; the guest never boots from the network.
		"-device", "virtio-net-pci,netdev=net0,romfile=",
	)
	for i := 0; c.RootPorts > 0 && i < c.RootPorts; i++ {
		a = append(a, "-device", fmt.Sprintf("pcie-root-port,id=rp%d,bus=pcie.0,chassis=%d,addr=0x%x", i, i+1, 0x10+i))
	}
	for i, d := range c.Drives {
		opts := fmt.Sprintf("file=%s,format=raw,if=none,id=disk%d", d.Path, i)
		switch {
		case d.ReadOnly:
			opts += ",readonly=on"
		case d.Snapshot:
			opts += ",snapshot=on"
		default:
			opts += ",cache=unsafe"
		}
		// Fixed slots after the root ports, in order, so that vda, vdb, ... follow Drives.
		a = append(a, "-drive", opts, "-device", fmt.Sprintf("virtio-blk-pci,drive=disk%d,bus=pcie.0,addr=0x%x", i, 0x18+i))
	}
	if c.GuestAgent {
		a = append(a,
			"-chardev", "socket,id=qga0,path="+guestAgentSocket(qmpSocket)+",server=on,wait=off",
			"-device", "virtio-serial-pci,id=vser0",
			"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
		)
	}
	return append(a, c.Extra...)
}

// VM is a running guest.
type VM struct {
	cfg       Config
	cmd       *exec.Cmd
	QMP       *Client
	SerialLog string
	// Started is when the emulator was started.
	Started time.Time

	sockDir string
	stderr  *bytes.Buffer
	exited  chan struct{}
	waitErr error
	mu      sync.Mutex
}

// Start starts the emulator and connects to its QMP socket, within ctx (ctx bounds the start, not
// the guest's life: Stop ends it). opts are passed to Dial.
func Start(ctx context.Context, cfg Config, opts ...DialOption) (*VM, error) {
	cfg.defaults()
	if cfg.Dir == "" {
		return nil, errors.New("qemu: Config.Dir is required")
	}
	// A unix socket path is limited to 107 bytes: keep it short, outside Dir.
	sockDir, err := os.MkdirTemp("", "hpqmp")
	if err != nil {
		return nil, err
	}
	vm := &VM{
		cfg:       cfg,
		SerialLog: filepath.Join(cfg.Dir, "serial.log"),
		sockDir:   sockDir,
		stderr:    &bytes.Buffer{},
		exited:    make(chan struct{}),
	}
	sock := filepath.Join(sockDir, "qmp.sock")
	vm.cmd = exec.Command(cfg.Binary, cfg.Args(vm.SerialLog, sock)...)
	vm.cmd.Stderr = &lockedWriter{mu: &vm.mu, w: vm.stderr}
	vm.cmd.Stdout = vm.cmd.Stderr
	// Its own process group, and killed if the test binary dies.
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := vm.cmd.Start(); err != nil {
		os.RemoveAll(sockDir)
		return nil, fmt.Errorf("qemu: start %s: %w", cfg.Binary, err)
	}
	vm.Started = time.Now()
	go func() {
		vm.waitErr = vm.cmd.Wait()
		close(vm.exited)
	}()
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-vm.exited:
			cancel()
		case <-dctx.Done():
		}
	}()
	vm.QMP, err = Dial(dctx, sock, opts...)
	if err != nil {
		vm.Kill()
		return nil, fmt.Errorf("qemu: %w; emulator output: %s", err, vm.Output())
	}
	return vm, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// GuestAgentSocket returns the host end of the guest agent's port (Config.GuestAgent), for
// DialGuestAgent.
func (vm *VM) GuestAgentSocket() string {
	return guestAgentSocket(filepath.Join(vm.sockDir, "qmp.sock"))
}

// Command returns the emulator's command line, for logs.
func (vm *VM) Command() string { return strings.Join(vm.cmd.Args, " ") }

// Output returns what the emulator printed on stdout and stderr.
func (vm *VM) Output() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.stderr.String()
}

// Serial returns the guest's console output so far.
func (vm *VM) Serial() string {
	b, _ := os.ReadFile(vm.SerialLog)
	return string(b)
}

// Exited is closed when the emulator has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// ExitErr is the emulator's exit status once Exited is closed.
func (vm *VM) ExitErr() error {
	<-vm.exited
	return vm.waitErr
}

// WaitSerial waits until the console output contains s, or ctx ends, or the emulator exits.
func (vm *VM) WaitSerial(ctx context.Context, s string) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if strings.Contains(vm.Serial(), s) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest console never said %q: %w", s, ctx.Err())
		case <-vm.exited:
			if strings.Contains(vm.Serial(), s) {
				return nil
			}
			return fmt.Errorf("guest console never said %q: the emulator exited (%v)", s, vm.waitErr)
		case <-t.C:
		}
	}
}

// Stop asks QEMU to quit and waits for it until ctx ends, then kills it. It also closes QMP and
// removes the socket folder. Safe to call more than once.
func (vm *VM) Stop(ctx context.Context) error {
	select {
	case <-vm.exited:
	default:
		if vm.QMP != nil {
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = vm.QMP.Execute(qctx, "quit", nil, nil)
			cancel()
		}
		select {
		case <-vm.exited:
		case <-ctx.Done():
			vm.Kill()
		}
	}
	if vm.QMP != nil {
		vm.QMP.Close()
	}
	os.RemoveAll(vm.sockDir)
	return nil
}

// Kill kills the emulator's process group and waits for it to exit.
func (vm *VM) Kill() {
	if vm.cmd.Process != nil {
		_ = syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-vm.exited
	os.RemoveAll(vm.sockDir)
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

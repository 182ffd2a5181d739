//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hotplug-agent/hotplug-agent/internal/qemu"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// The systemd guest (issue 14): Debian bookworm from scripts/guest-image.sh, booted with systemd
// as process 1, the agent installed with dpkg as an operator would and run by the unit as
// shipped, hardening included. Commands run in the guest through qemu-guest-agent; the agent is
// observed through its HTTP API over the host forward, and Prometheus scrapes it there.

// sysEnv is what the systemd guest needs beyond env, prepared once per test binary.
var sysEnv struct {
	once    sync.Once
	missing error // not installed: skip (fail under CI=true)
	err     error // a failure to prepare what is installed
	image   string
	deb     string // the package the guest installs
	debKind string // what the package is, for the log
	dir     string
}

// guestImageScript is the script that builds the image; the image is current when its key is
// this script's hash, as the script writes it.
const guestImageScript = "scripts/guest-image.sh"

// prepareSystemd finds the guest image and builds the agent's package, once.
func prepareSystemd(t testing.TB) {
	t.Helper()
	prepare(t)
	sysEnv.once.Do(func() {
		root, err := qemu.ModuleRoot()
		if err != nil {
			sysEnv.err = err
			return
		}
		sysEnv.image, sysEnv.missing = findGuestImage(root, env.cacheDir)
		if sysEnv.missing != nil {
			return
		}
		for _, tool := range []string{"mkfs.ext4", "dpkg-deb", "make"} {
			if _, err := exec.LookPath(tool); err != nil {
				sysEnv.missing = fmt.Errorf("%s is not installed (Debian packages e2fsprogs, dpkg, make)", tool)
				return
			}
		}
		if sysEnv.dir, sysEnv.err = os.MkdirTemp("", "hotplug-e2e-deb"); sysEnv.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		if sysEnv.deb, sysEnv.debKind, sysEnv.err = agentPackage(ctx, root, sysEnv.dir); sysEnv.err == nil {
			fmt.Fprintf(os.Stderr, "e2e: %s %s built in %v\n", sysEnv.debKind, filepath.Base(sysEnv.deb), time.Since(start).Round(time.Millisecond))
		}
	})
	if sysEnv.err != nil {
		t.Fatalf("systemd guest: %v", sysEnv.err)
	}
	if sysEnv.missing != nil {
		testenv.Unavailable(t, "systemd guest: %v", sysEnv.missing)
	}
}

// findGuestImage returns the image scripts/guest-image.sh built, or an error saying how to build
// it, also when it was built by another version of the script.
func findGuestImage(root, cacheDir string) (string, error) {
	img := filepath.Join(cacheDir, "guest", "rootfs.ext4")
	if _, err := os.Stat(img); err != nil {
		return "", fmt.Errorf("no guest image (run: bash %s): %w", guestImageScript, err)
	}
	script, err := os.ReadFile(filepath.Join(root, guestImageScript))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(script)
	want := hex.EncodeToString(sum[:])[:16]
	got, _ := os.ReadFile(filepath.Join(cacheDir, "guest", "key"))
	if strings.TrimSpace(string(got)) != want {
		return "", fmt.Errorf("the guest image in %s was built by another version of %s (key %q, want %q): run: bash %s",
			filepath.Dir(img), guestImageScript, strings.TrimSpace(string(got)), want, guestImageScript)
	}
	return img, nil
}

// agentPackage builds the .deb the guest installs with dpkg -i, with `make package`, into dir
// (its own binary and packages, not the repository's bin/, which other tests build into), and
// says what it is.
func agentPackage(ctx context.Context, root, dir string) (deb, kind string, err error) {
	cmd := exec.CommandContext(ctx, "make", "-C", root, "package", "BIN="+filepath.Join(dir, "hotplug-agent"), "PKGDIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("make package: %w\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "hotplug-agent_*_amd64.deb"))
	if len(debs) != 1 {
		return "", "", fmt.Errorf("make package made %d hotplug-agent_*_amd64.deb in %s; want one", len(debs), dir)
	}
	return debs[0], "the project's package (make package)", nil
}

// sysGuest is a booted systemd guest: the harness's guest (QMP, HTTP API, artefacts) plus the
// guest agent through which the test runs commands.
type sysGuest struct {
	*guest
	ga *qemu.GuestAgent
	// toGA is how long after QEMU started the guest agent first answered.
	toGA time.Duration
}

// sysGuestMemory is the guest's boot memory: four 128 MiB blocks, memory0-3.
const sysGuestMemory = "512M"

// bootSystemd boots the disk image disk (read-write: it keeps what the guest writes, across
// boots) with payload as a second, read-only disk, and waits for qemu-guest-agent to answer. The
// agent's port is forwarded from *hostPort, or from another free port if that one was taken
// meanwhile: then *hostPort is that one, and moved is called with it. It fails t if the guest
// does not come up.
func bootSystemd(t testing.TB, test, name, disk, payload string, hostPort *int, moved func(int), extra ...string) *sysGuest {
	t.Helper()
	return bootSystemdWith(t, test, name, sysBoot{disk: disk, payload: payload, extra: extra}, hostPort, moved)
}

// sysBoot is how bootSystemdWith boots the systemd guest.
type sysBoot struct {
	disk, payload string
	// append replaces the kernel command line's memhp_default_state=offline (empty: that).
	append []string
	// memory, slots and maxMem: -m memory,slots=slots,maxmem=maxMem (empty: sysGuestMemory and
	// qemu.Config's defaults).
	memory, maxMem string
	slots          int
	// extra are more QEMU arguments (-numa, -object).
	extra []string
}

// bootSystemdWith is bootSystemd with the kernel command line and memory of b.
func bootSystemdWith(t testing.TB, test, name string, b sysBoot, hostPort *int, moved func(int)) *sysGuest {
	t.Helper()
	dir := artefactDir(t, test, name)
	g := &guest{name: name, dir: dir}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := (qemu.Guest{Init: env.init, Kernel: env.kernel, Root: "/dev/vda"}).WriteInitramfs(initrd); err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	var err error
	if g.qmpLog, err = os.Create(filepath.Join(dir, "qmp-events.log")); err != nil {
		t.Fatal(err)
	}
	cfg := qemu.Config{
		Kernel:    env.kernel,
		Initramfs: initrd,
		// offline: the kernel leaves hot-added memory to the agent (the Debian default, said
		// here so that the test does not depend on it); eth0: the name the initramfs configured.
		Append:     []string{"memhp_default_state=offline", "net.ifnames=0"},
		Memory:     sysGuestMemory,
		MaxMem:     b.maxMem,
		Slots:      b.slots,
		Drives:     []qemu.Drive{{Path: b.disk}, {Path: b.payload, ReadOnly: true}},
		GuestAgent: true,
		Dir:        dir,
		Extra:      b.extra,
	}
	if b.append != nil {
		cfg.Append = append(slices.Clone(b.append), "net.ifnames=0")
	}
	if b.memory != "" {
		cfg.Memory = b.memory
	}
	for attempt := 1; ; attempt++ {
		cfg.Forwards = []qemu.Forward{{HostPort: *hostPort, GuestPort: guestPort}}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		g.vm, err = qemu.Start(ctx, cfg, qemu.WithEventHandler(func(e qemu.Event) {
			g.logMu.Lock()
			fmt.Fprintf(g.qmpLog, "%s %s\n", e.Time.Format("15:04:05.000000"), e)
			g.logMu.Unlock()
		}))
		cancel()
		if err == nil {
			break
		}
		if attempt < 3 && strings.Contains(err.Error(), "host forwarding") {
			// Free when chosen, taken before QEMU bound it: QEMU exits at once.
			t.Logf("QEMU could not forward port %d (taken meanwhile?); trying another: %v", *hostPort, err)
			if *hostPort, err = qemu.FreePort(); err != nil {
				t.Fatal(err)
			}
			moved(*hostPort)
			continue
		}
		t.Fatalf("start QEMU: %v", err)
	}
	g.base = fmt.Sprintf("http://127.0.0.1:%d", *hostPort)
	os.WriteFile(filepath.Join(dir, "command.txt"), []byte(g.vm.Command()+"\n"), 0o644)
	sg := &sysGuest{guest: g}
	ok := false
	defer func() {
		if !ok {
			sg.stop()
			g.logArtefacts(t)
		}
	}()
	gctx, gcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer gcancel()
	if sg.ga, err = qemu.DialGuestAgent(gctx, g.vm.GuestAgentSocket()); err != nil {
		t.Fatalf("guest %s: %v", name, err)
	}
	sg.toGA = time.Since(g.vm.Started)
	os.Remove(initrd)
	t.Logf("guest %s: qemu-guest-agent answered %v after QEMU started (kernel %s, %s); artefacts in %s",
		name, sg.toGA.Round(time.Millisecond), env.kernel.Version, bootKind(cfg), dir)
	ok = true
	return sg
}

// stop quits QEMU and closes the guest agent's connection. Safe to call more than once.
func (g *sysGuest) stop() {
	if g.ga != nil {
		g.ga.Close()
	}
	g.guest.stop()
}

// saveJournal writes the guest's journal of this boot to journal.txt among its artefacts, if the
// guest still answers.
func (g *sysGuest) saveJournal() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := g.ga.Exec(ctx, nil, "journalctl", "-b", "--no-pager", "-o", "short-monotonic")
	if err == nil {
		os.WriteFile(filepath.Join(g.dir, "journal.txt"), []byte(r.Stdout+r.Stderr), 0o644)
	}
}

// exec runs argv in the guest with stdin and returns the result, failing t if it cannot be run
// or does not end within a minute (not if it fails: see must).
func (g *sysGuest) exec(t testing.TB, stdin []byte, argv ...string) qemu.ExecResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := g.ga.Exec(ctx, stdin, argv...)
	if err != nil {
		t.Fatalf("guest %s: %v", g.name, err)
	}
	return r
}

// sh runs a shell script in the guest and returns its result.
func (g *sysGuest) sh(t testing.TB, script string) qemu.ExecResult {
	t.Helper()
	return g.exec(t, nil, "/bin/sh", "-c", script)
}

// must runs a shell script in the guest and returns its standard output, failing t unless it
// exits 0.
func (g *sysGuest) must(t testing.TB, script string) string {
	t.Helper()
	r := g.sh(t, script)
	if !r.Success() {
		t.Fatalf("guest %s: %q: %v", g.name, script, r)
	}
	return r.Stdout
}

// unit returns properties of hotplug-agent.service (systemctl show -p ...).
func (g *sysGuest) unit(t testing.TB, props ...string) map[string]string {
	t.Helper()
	args := []string{"systemctl", "show", "hotplug-agent.service"}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	r := g.exec(t, nil, args...)
	if !r.Success() {
		t.Fatalf("systemctl show: %v", r)
	}
	m := map[string]string{}
	for _, line := range strings.Split(r.Stdout, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// unitProps are what the checks read of the unit.
var unitProps = []string{"Type", "ActiveState", "SubState", "Result", "NRestarts", "MainPID", "WatchdogUSec",
	"NotifyAccess", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic", "ExecStart"}

// journal returns the unit's journal as JSON lines (every field: the message and, with native
// journald logging, the structured fields), since the cursor after (empty: all of it), and the
// cursor to continue from.
func (g *sysGuest) journal(t testing.TB, after string) (entries []string, cursor string) {
	t.Helper()
	args := []string{"journalctl", "--no-pager", "-o", "json", "-u", "hotplug-agent.service", "--show-cursor"}
	if after != "" {
		args = append(args, "--after-cursor="+after)
	}
	r := g.exec(t, nil, args...)
	if !r.Success() {
		t.Fatalf("journalctl: %v", r)
	}
	for _, line := range strings.Split(r.Stdout, "\n") {
		switch {
		case strings.HasPrefix(line, "-- cursor: "):
			cursor = strings.TrimPrefix(line, "-- cursor: ")
		case strings.HasPrefix(line, "{"):
			entries = append(entries, line)
		}
	}
	if cursor == "" {
		cursor = after
	}
	return entries, cursor
}

// journalMessages returns the MESSAGE of each journal entry (JSON lines), for logs.
func journalMessages(entries []string) string {
	var b strings.Builder
	for _, e := range entries {
		var m struct {
			Message any `json:"MESSAGE"`
		}
		if json.Unmarshal([]byte(e), &m) == nil {
			fmt.Fprintf(&b, "%v\n", m.Message)
		}
	}
	return b.String()
}

// waitActive waits up to d until the unit is active and running with a main PID other than
// notPID (empty: any), and returns its properties.
func (g *sysGuest) waitActive(t testing.TB, d time.Duration, notPID, what string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p := g.unit(t, unitProps...)
		if p["ActiveState"] == "active" && p["SubState"] == "running" && p["MainPID"] != "0" && p["MainPID"] != notPID {
			return p
		}
		if time.Now().After(deadline) {
			entries, _ := g.journal(t, "")
			t.Fatalf("hotplug-agent.service not active and running (a new main PID: %v) within %v of %s: %v\njournal:\n%s",
				notPID != "", d, what, p, journalMessages(entries))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitHTTP waits up to d until the agent answers /healthz through the host forward. Asked only
// once the unit is active: the agent listens before READY=1.
func (g *sysGuest) waitHTTP(t testing.TB, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := g.waitHealthyHTTP(ctx); err != nil {
		t.Fatalf("guest %s: %v", g.name, err)
	}
}

// sysState is what the checks read of the agent's state file.
type sysState struct {
	LastEventID   uint64       `json:"last_event_id"`
	CleanShutdown bool         `json:"clean_shutdown"`
	Interfaces    []stateIface `json:"interfaces"`
}

type stateIface struct {
	SymbolicLink string `json:"symbolic_link"`
}

const statePath = "/var/lib/hotplug-agent/state.json"

func (g *sysGuest) state(t testing.TB) sysState {
	t.Helper()
	var s sysState
	out := g.must(t, "cat "+statePath)
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%s: %v: %s", statePath, err, out)
	}
	return s
}

// sysRun is what the checks of one run share, in the order they run.
type sysRun struct {
	test          string // the top-level test's name: the artefacts' folder
	prefix        string // of the guests' artefact folders: "" or "retry-"
	disk, payload string
	port          int
	prom          *prometheus
	g             *sysGuest

	cursor string // journal cursor
	all    *stream
	lastID uint64 // the highest notification ID seen

	// The CPUs and blocks hot-added and announced, and the figures for the log and the README.
	cpus    []int
	blocks  []int
	figures []string
	gaps    []string
}

func (r *sysRun) figure(t testing.TB, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	t.Log("figure: " + s)
	r.figures = append(r.figures, s)
}

// gap notes a known gap of the agent or the unit: logged now and again at the end of the run.
func (r *sysRun) gap(t testing.TB, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	t.Log("known gap: " + s)
	r.gaps = append(r.gaps, s)
}

// follow replaces the run's stream of every class with a new one from g (query q), which lasts
// until the next follow or the end of the run.
func (r *sysRun) follow(t testing.TB, q string) {
	t.Helper()
	if r.all != nil {
		r.all.cancel()
	}
	r.all = r.g.openStream(t, q)
}

// take takes n notifications from the run's stream of every class, noting the last ID.
func (r *sysRun) take(t testing.TB, n int, d time.Duration, what string) []notification {
	t.Helper()
	got := r.all.take(t, n, d, what)
	for _, x := range got {
		if x.ID <= r.lastID {
			t.Errorf("notification %v has ID %d, not above the last one seen, %d", x, x.ID, r.lastID)
		}
		r.lastID = max(r.lastID, x.ID)
	}
	return got
}

// TestIntegrationSystemd boots the Debian guest of scripts/guest-image.sh with systemd, installs
// the agent's package with dpkg, and checks what an operator relies on, with the unit as
// shipped: Type=notify readiness, CPU, pc-dimm and virtio-mem hot-add onlined by the agent and
// announced, Prometheus on the host seeing them, the watchdog restarting a frozen agent, an
// orderly stop, the same after a reboot, and dpkg --purge. Two boots; the checks share them and
// run in order (one that fails stops those after it). A check that fails on a guest whose
// kernel reported a stalled CPU (see guestStall) ends the run, and all of it runs once more on new
// guests, whose outcome decides.
func TestIntegrationSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Debian guest with systemd: not in -short mode")
	}
	prepareSystemd(t)
	os.RemoveAll(filepath.Join(artefactRoot(), t.Name()))
	if runSystemd(t, "", true) {
		runSystemd(t, "retry-", false)
	}
}

// runSystemd runs the checks of TestIntegrationSystemd once, on guests whose artefacts are named
// prefix+"boot1" and prefix+"boot2", and stops them before it returns. When tolerant, a check
// that fails on a guest whose kernel reported a stalled CPU does not fail t (its messages are
// logged): the run ends there and runSystemd reports true.
func runSystemd(t *testing.T, prefix string, tolerant bool) (stalled bool) {
	start := time.Now()
	r := &sysRun{test: t.Name(), prefix: prefix}
	r.disk, r.payload, r.port = sysFiles(t)
	// Prometheus first: it scrapes the forwarded port from the start, and is ready when the
	// agent is.
	r.prom = startPrometheus(t, fmt.Sprintf("127.0.0.1:%d", r.port))
	defer func() {
		if r.all != nil {
			r.all.cancel()
		}
		if r.g != nil {
			r.g.saveJournal()
			r.g.stop()
		}
		t.Logf("systemd guest: %v in all (%s)", time.Since(start).Round(time.Millisecond), sysEnv.debKind)
		for _, f := range r.figures {
			t.Logf("  %s", f)
		}
		for _, g := range r.gaps {
			t.Logf("  known gap: %s", g)
		}
	}()
	r.g = bootSystemd(t, r.test, prefix+"boot1", r.disk, r.payload, &r.port, r.prom.retarget)
	r.figure(t, "boot 1 (no agent yet): QEMU start to qemu-guest-agent answering %v", r.g.toGA.Round(100*time.Millisecond))

	steps := []struct {
		name string
		run  func(testing.TB, *sysRun)
	}{
		{"install", testSysInstall},
		{"hot_add", testSysHotAdd},
		{"reload", testSysReload},
		{"watchdog", testSysWatchdog},
		{"stop", testSysStop},
		{"reboot", testSysReboot},
		{"allowed_cpus", testSysAllowedCPUs},
		{"cpuset_v2", testSysCpusetV2},
		{"purge", testSysPurge},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() || stalled {
					r.g.logArtefacts(t)
				}
			})
			if !tolerant {
				s.run(t, r)
				return
			}
			stalled = tryOnce(t, func(tb testing.TB) { s.run(tb, r) }, func() *guest { return r.g.guest }, t.Name()+" and the checks after it")
		}) {
			t.Fatalf("%s failed: the checks after it need what it does", s.name)
		}
		if stalled {
			return true
		}
	}
	return false
}

// makePayload makes a small ext4 image that holds the package, for the guest's second disk.
// sysFiles makes what a boot of the systemd guest needs, in t's temporary directory: a sparse copy
// of the guest image, the payload disk with the package, and a free host port to forward.
func sysFiles(t testing.TB) (disk, payload string, port int) {
	t.Helper()
	tmp := t.TempDir()
	disk, payload = filepath.Join(tmp, "rootfs.ext4"), filepath.Join(tmp, "payload.ext4")
	if out, err := exec.Command("cp", "--sparse=always", sysEnv.image, disk).CombinedOutput(); err != nil {
		t.Fatalf("copy the guest image: %v: %s", err, out)
	}
	if err := makePayload(sysEnv.deb, payload); err != nil {
		t.Fatal(err)
	}
	port, err := qemu.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return disk, payload, port
}

func makePayload(deb, img string) error {
	dir, err := os.MkdirTemp("", "hotplug-e2e-payload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b, err := os.ReadFile(deb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(deb)), b, 0o644); err != nil {
		return err
	}
	size := len(b)/(1<<20) + 16
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", dir, img, fmt.Sprintf("%dM", size)).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d (payload disk): %v: %s", err, out)
	}
	return nil
}

// testSysInstall installs the package with dpkg -i: its maintainer script enables and starts the
// service, which becomes active only through READY=1 (Type=notify), with the packaged
// configuration, and answers over the host forward.
func testSysInstall(t testing.TB, r *sysRun) {
	g := r.g
	// The guest as built: the kernel leaves hot-added memory offline, and no udev rule onlines
	// anything (scripts/guest-image.sh checks the rules too).
	if got := strings.TrimSpace(g.must(t, "cat /sys/devices/system/memory/auto_online_blocks")); got != "offline" {
		t.Fatalf("auto_online_blocks is %q; want offline, so that the agent is the one that onlines", got)
	}
	if out := g.must(t, "find / \\( -path /proc -o -path /sys -o -path /mnt \\) -prune -o -name '*hotplug*' -print"); strings.TrimSpace(out) != "" {
		t.Fatalf("files named *hotplug* before the package is installed: the purge check needs none:\n%s", out)
	}
	deb := "/mnt/" + filepath.Base(sysEnv.deb)
	g.must(t, "mount -o ro /dev/vdb /mnt")
	start := time.Now()
	res := g.sh(t, "dpkg -i "+deb)
	took := time.Since(start)
	if !res.Success() {
		entries, _ := g.journal(t, "")
		t.Fatalf("dpkg -i %s: %v\njournal:\n%s", deb, res, journalMessages(entries))
	}
	r.figure(t, "dpkg -i to the service active (postinst's systemctl start returns at READY=1): %v", took.Round(100*time.Millisecond))
	if out := g.must(t, "systemctl is-enabled hotplug-agent.service"); strings.TrimSpace(out) != "enabled" {
		t.Errorf("systemctl is-enabled: %q; want enabled", out)
	}
	p := g.waitActive(t, 30*time.Second, "", "dpkg -i")
	checkNotifyUnit(t, p)
	if p["NRestarts"] != "0" {
		t.Errorf("NRestarts=%s after the install; want 0", p["NRestarts"])
	}
	if !strings.Contains(p["ExecStart"], "--config.file=/etc/hotplug-agent/config.yaml") {
		t.Errorf("ExecStart %s does not run with /etc/hotplug-agent/config.yaml", p["ExecStart"])
	}
	// The packaged configuration, unchanged: dpkg's checksum of the conffile matches.
	conf := g.must(t, "dpkg-query -W -f '${Conffiles}' hotplug-agent")
	sum := strings.Fields(g.must(t, "md5sum /etc/hotplug-agent/config.yaml"))
	if len(sum) == 0 || !strings.Contains(conf, "/etc/hotplug-agent/config.yaml "+sum[0]) {
		t.Errorf("/etc/hotplug-agent/config.yaml is not the package's conffile as shipped: conffiles %q, md5sum %v", conf, sum)
	}
	g.waitHTTP(t, 30*time.Second)
	r.follow(t, "")
	var entries []string
	entries, r.cursor = g.journal(t, "")
	if !slices.ContainsFunc(entries, func(e string) bool { return strings.Contains(e, "Started hotplug-agent.service") }) {
		t.Errorf("the journal does not say systemd started the unit:\n%s", journalMessages(entries))
	}
	cpus, blocks := g.interfaceCounts(t)
	g.bootCPUs, g.bootBlocks = cpus, blocks
	t.Logf("installed %s; agent active (main PID %s), %d CPUs and %d memory blocks online", filepath.Base(deb), p["MainPID"], cpus, blocks)
}

// checkNotifyUnit checks that the unit is the shipped Type=notify service with its watchdog, and
// is active and running: for Type=notify that state is reached only through READY=1.
func checkNotifyUnit(t testing.TB, p map[string]string) {
	t.Helper()
	for k, want := range map[string]string{"Type": "notify", "NotifyAccess": "main", "WatchdogUSec": "30s", "ActiveState": "active", "SubState": "running"} {
		if p[k] != want {
			t.Errorf("hotplug-agent.service %s=%s; want %s", k, p[k], want)
		}
	}
	start, _ := strconv.ParseInt(p["ExecMainStartTimestampMonotonic"], 10, 64)
	ready, _ := strconv.ParseInt(p["ActiveEnterTimestampMonotonic"], 10, 64)
	if ready < start || start == 0 {
		t.Errorf("ActiveEnterTimestampMonotonic %d before ExecMainStartTimestampMonotonic %d", ready, start)
	}
}

// guestFile reads a file of the guest.
func (g *sysGuest) guestFile(t testing.TB, p string) string {
	t.Helper()
	return strings.TrimSpace(g.must(t, "cat "+p))
}

// testSysHotAdd hot-adds a CPU, a 256 MiB pc-dimm and grows a virtio-mem device by 256 MiB: the
// agent, under the unit's hardening and the packaged online policy, onlines each CPU and block
// (the kernel does not), and announces it on /events, in the journal and in its metrics, which
// Prometheus on the host scrapes.
func testSysHotAdd(t testing.TB, r *sysRun) {
	g := r.g
	ctx := ctxFor(t, 3*time.Minute)
	const promArrivals = `sum(hotplug_agent_notifications_total{job="guest",interface_class="processor",event="arrival"}) or vector(0)`
	r.prom.waitUp(t, time.Minute)
	promBefore := r.prom.scalar(t, promArrivals)
	before := g.metrics(t)

	// A CPU in the lowest free slot.
	slots, err := g.vm.FreeCPUSlots(ctx)
	if err != nil || len(slots) == 0 {
		t.Fatalf("free CPU slots: %v, %v", slots, err)
	}
	ost := g.vm.QMP.Subscribe()
	start := time.Now()
	if err := g.vm.AddCPU(ctx, "cpu-a", slots[0]); err != nil {
		t.Fatal(err)
	}
	got := r.take(t, 1, time.Minute, "the processor arrival after device_add cpu-a")
	r.figure(t, "CPU device_add to its arrival on /events (onlined by the agent): %v", time.Since(start).Round(10*time.Millisecond))
	waitInsertOST(t, ctx, ost, "cpu-a")
	a := got[0]
	if a.Event != "arrival" || a.CPU == nil || a.State != "online" || a.Cause != "uevent" {
		t.Fatalf("after device_add cpu-a: %v; want an online processor arrival from a uevent", a)
	}
	r.cpus = append(r.cpus, *a.CPU)

	// A pc-dimm: two blocks.
	ost = g.vm.QMP.Subscribe()
	if err := g.vm.AddDIMM(ctx, "dimm-a", 256*mib); err != nil {
		t.Fatal(err)
	}
	got = r.take(t, 2, time.Minute, "two memory arrivals after device_add pc-dimm dimm-a (256 MiB)")
	waitInsertOST(t, ctx, ost, "dimm-a")
	dimm := blocksOf(t, got)

	// virtio-mem on the root port, grown from 0 to 256 MiB: two blocks.
	if err := g.vm.AddVirtioMem(ctx, "vmem-a", "rp0", 1024*mib); err != nil {
		t.Fatal(err)
	}
	if err := g.vm.ResizeVirtioMem(ctx, "vmem-a", 256*mib); err != nil {
		t.Fatal(err)
	}
	got = r.take(t, 2, time.Minute, "two memory arrivals after virtio-mem vmem-a grew to 256 MiB")
	if err := g.vm.WaitVirtioMemSize(ctx, "vmem-a", 256*mib); err != nil {
		t.Fatal(err)
	}
	vmem := blocksOf(t, got)
	r.all.quiet(t, time.Second, "the hot-adds' arrivals")
	r.blocks = append(append(r.blocks, dimm...), vmem...)

	// The guest's sysfs: online, and the agent did it (success counted per CPU and block).
	if v := g.guestFile(t, fmt.Sprintf("/sys/devices/system/cpu/cpu%d/online", r.cpus[0])); v != "1" {
		t.Errorf("cpu%d/online is %q in the guest", r.cpus[0], v)
	}
	for _, b := range r.blocks {
		if v := g.guestFile(t, fmt.Sprintf("/sys/devices/system/memory/memory%d/state", b)); v != "online" {
			t.Errorf("memory%d/state is %q in the guest", b, v)
		}
	}
	// hotplug-agent list agrees with lsmem and lscpu, the hot-added CPU, DIMM and virtio-mem
	// blocks included.
	checkListInGuest(t, g)

	after := g.metrics(t)
	for class, want := range map[string]float64{"processor": 1, "memory": float64(len(r.blocks))} {
		key := []string{"interface_class", class, "result", "success"}
		if d := after.get("hotplug_agent_online_attempts_total", key...) - before.get("hotplug_agent_online_attempts_total", key...); d != want {
			t.Errorf("hotplug_agent_online_attempts_total{%s,success} grew by %v; want %v: the agent did not online them all", class, d, want)
		}
		fkey := []string{"interface_class", class, "result", "failure"}
		if d := after.get("hotplug_agent_online_attempts_total", fkey...) - before.get("hotplug_agent_online_attempts_total", fkey...); d != 0 {
			t.Errorf("hotplug_agent_online_attempts_total{%s,failure} grew by %v", class, d)
		}
	}

	// The journal: a line per arrival naming the interface.
	entries, cursor := g.journal(t, r.cursor)
	r.cursor = cursor
	links := []string{fmt.Sprintf("/sys/devices/system/cpu/cpu%d", r.cpus[0])}
	for _, b := range r.blocks {
		links = append(links, fmt.Sprintf("/sys/devices/system/memory/memory%d", b))
	}
	for _, l := range links {
		// Logged natively: the notification's fields are journal fields, as the exec
		// environment names them, at priority info.
		if !slices.ContainsFunc(entries, func(e string) bool {
			var j map[string]any
			return json.Unmarshal([]byte(e), &j) == nil && j["HOTPLUG_EVENT"] == "arrival" && j["HOTPLUG_SYMBOLIC_LINK"] == l &&
				j["PRIORITY"] == "6" && j["SYSLOG_IDENTIFIER"] == "hotplug-agent"
		}) {
			t.Errorf("journalctl -u hotplug-agent -o json has no entry with HOTPLUG_EVENT=arrival, HOTPLUG_SYMBOLIC_LINK=%s, PRIORITY=6:\n%s", l, journalMessages(entries))
		}
	}

	// Prometheus on the host saw the processor arrival.
	deadline := time.Now().Add(30 * time.Second)
	for v := r.prom.scalar(t, promArrivals); v <= promBefore; v = r.prom.scalar(t, promArrivals) {
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus: %s = %v, was %v before the CPU hot-add, 30 s later", promArrivals, v, promBefore)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("hot-added cpu%d, pc-dimm blocks %v, virtio-mem blocks %v: onlined by the agent, announced; Prometheus saw the arrival", r.cpus[0], dimm, vmem)
}

// blocksOf checks that got are online memory arrivals from uevents and returns their blocks.
func blocksOf(t testing.TB, got []notification) []int {
	t.Helper()
	var blocks []int
	for _, a := range got {
		if a.Event != "arrival" || a.MemoryBlock == nil || a.State != "online" || a.Cause != "uevent" {
			t.Fatalf("%v: want an online memory arrival from a uevent", a)
		}
		blocks = append(blocks, *a.MemoryBlock)
	}
	return blocks
}

// agentOnlinesWhatWasAddedWhileDown says whether the agent, at start, onlines (under its policy)
// and announces a CPU or memory block hot-added while it was not running (its "add" uevent went
// to the frozen agent's socket, gone with it). It does: the state file keeps the devices present,
// so at start a CPU hot-added meanwhile is told from one an administrator took offline. Kept as a
// switch so that the check can report a regression as what it is.
const agentOnlinesWhatWasAddedWhileDown = true

// testSysWatchdog freezes the agent (SIGSTOP): systemd's watchdog (WatchdogSec=30s) must kill it
// and start it again. Meanwhile the CPU hot-added before is taken offline and another CPU is
// hot-added. The restarted agent announces what changed while it was frozen, with IDs above those
// given before, and a client that resumes from its last ID gets nothing twice.
func testSysWatchdog(t testing.TB, r *sysRun) {
	g := r.g
	ctx := ctxFor(t, 3*time.Minute)
	p := g.unit(t, unitProps...)
	pid, restarts := p["MainPID"], p["NRestarts"]
	watchdog, err := time.ParseDuration(p["WatchdogUSec"])
	if err != nil {
		t.Fatalf("WatchdogUSec=%q: %v", p["WatchdogUSec"], err)
	}
	lastBefore := r.lastID
	frozen := time.Now()
	// The guest's clock at the SIGSTOP (/proc/uptime: seconds since boot, as the journal's
	// monotonic timestamps count them).
	up := strings.Fields(g.must(t, "cat /proc/uptime; kill -STOP "+pid))
	stoppedAt, _ := strconv.ParseFloat(up[0], 64)

	// While it is frozen: cpu-a offline (an administrator's change), cpu-b hot-added.
	cpuA := r.cpus[0]
	linkA := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpuA)
	g.must(t, "echo 0 > "+linkA+"/online")
	slots, err := g.vm.FreeCPUSlots(ctx)
	if err != nil || len(slots) == 0 {
		t.Fatalf("free CPU slots: %v, %v", slots, err)
	}
	ost := g.vm.QMP.Subscribe()
	if err := g.vm.AddCPU(ctx, "cpu-b", slots[0]); err != nil {
		t.Fatal(err)
	}
	waitInsertOST(t, ctx, ost, "cpu-b")
	cpuB := cpuA + 1 // the kernel gives a hot-added CPU the lowest free number
	linkB := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpuB)
	if !g.sh(t, "test -e "+linkB).Success() {
		t.Fatalf("no %s in the guest after device_add cpu-b", linkB)
	}

	// systemd: watchdog timeout, SIGABRT, a restart after RestartSec, READY=1 again.
	np := g.waitActive(t, watchdog+time.Minute, pid, "SIGSTOP of the agent")
	restart := time.Since(frozen)
	checkNotifyUnit(t, np)
	if n, _ := strconv.Atoi(np["NRestarts"]); strconv.Itoa(n-1) != restarts {
		t.Errorf("NRestarts=%s after the watchdog restart; was %s", np["NRestarts"], restarts)
	}
	sinceFreeze := r.cursor
	entries, cursor := g.journal(t, r.cursor)
	r.cursor = cursor
	var fired float64
	for _, e := range entries {
		var j struct {
			Message   any    `json:"MESSAGE"`
			Monotonic string `json:"__MONOTONIC_TIMESTAMP"`
		}
		if json.Unmarshal([]byte(e), &j) == nil && strings.Contains(fmt.Sprint(j.Message), "Watchdog timeout") {
			us, _ := strconv.ParseFloat(j.Monotonic, 64)
			fired = us / 1e6
		}
	}
	if fired == 0 {
		t.Fatalf("the journal does not say the watchdog fired:\n%s", journalMessages(entries))
	}
	readyUS, _ := strconv.ParseFloat(np["ActiveEnterTimestampMonotonic"], 64)
	ready := readyUS / 1e6
	r.figure(t, "watchdog (WatchdogSec=%v, RestartSec=1s): SIGSTOP to \"Watchdog timeout\" %.1f s (the last keep-alive came before the SIGSTOP); timeout to the new agent's READY=1 %.1f s; SIGSTOP to active again as seen from the host %v",
		watchdog, fired-stoppedAt, ready-fired, restart.Round(100*time.Millisecond))
	if fired-stoppedAt > watchdog.Seconds()+1 || fired < stoppedAt {
		t.Errorf("the watchdog fired %.1f s after the SIGSTOP; want within WatchdogSec=%v", fired-stoppedAt, watchdog)
	}
	if ready-fired > 15 {
		t.Errorf("the restarted agent was READY %.1f s after the watchdog fired; want it within 15 s (RestartSec=1s)", ready-fired)
	}
	// The restarted agent announced the change made while it was frozen (the log callback).
	if !slices.ContainsFunc(entries, func(e string) bool {
		return strings.Contains(e, linkA) && strings.Contains(e, "removal") && strings.Contains(e, "startup")
	}) {
		t.Errorf("the restarted agent did not announce the removal of %s (offlined while it was frozen), cause startup:\n%s", linkA, journalMessages(entries))
	}
	g.waitHTTP(t, 30*time.Second)

	// A client resumes from the last ID it saw. The restarted agent (it did not stop cleanly) did
	// not give that ID, so it sends a resync, the active set, from which the client reconciles:
	// cpu-a is gone. Nothing comes as a notification with an ID at or below the one resumed from.
	resumed := g.subscribe(t, fmt.Sprintf("last_event_id=%d", lastBefore))
	first := resumed.next(t, 30*time.Second, "the resync or the notifications after the ID resumed from")
	var after []notification
	if first.SSEEvent == "resync" {
		if first.LastID <= lastBefore {
			t.Errorf("resync last_id %d; want above %d, the last ID before the freeze", first.LastID, lastBefore)
		}
		active := map[string]bool{}
		for _, i := range first.Interfaces {
			active[i.SymbolicLink] = true
		}
		if active[linkA] || !active["/sys/devices/system/cpu/cpu0"] {
			t.Errorf("resync's active set %v: want cpu0 and not %s", keys(active), linkA)
		}
		for _, b := range r.blocks {
			if l := fmt.Sprintf("/sys/devices/system/memory/memory%d", b); !active[l] {
				t.Errorf("resync's active set lacks %s", l)
			}
		}
		r.lastID = max(r.lastID, first.LastID)
	} else {
		after = append(after, first)
	}
	for {
		select {
		case n := <-resumed.ch:
			after = append(after, n)
			continue
		case <-time.After(2 * time.Second):
		}
		break
	}
	for _, n := range after {
		if n.SSEEvent != "" || n.ID <= lastBefore {
			t.Errorf("resumed after ID %d, got %v (ID %d, %q): a repeat", lastBefore, n, n.ID, n.SSEEvent)
		}
		r.lastID = max(r.lastID, n.ID)
	}
	if s := g.state(t); s.LastEventID <= lastBefore {
		t.Errorf("state file after the restart: last_event_id %d; want above %d", s.LastEventID, lastBefore)
	}

	// cpu-b, hot-added while the agent was frozen: the restarted agent onlines it, then announces
	// its arrival (from the online uevent its write causes). Both follow the start.
	var online string
	var announced bool
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		online = g.guestFile(t, linkB+"/online")
		ents, _ := g.journal(t, sinceFreeze)
		announced = slices.ContainsFunc(ents, func(e string) bool { return strings.Contains(e, linkB) && strings.Contains(e, "arrival") })
		if (online == "1" && announced) || !agentOnlinesWhatWasAddedWhileDown || time.Now().After(deadline) {
			break
		}
	}
	switch {
	case agentOnlinesWhatWasAddedWhileDown && (online != "1" || !announced):
		t.Errorf("%s, hot-added while the agent was frozen: online %q, arrival in the journal %v; want onlined and announced by the restarted agent", linkB, online, announced)
	case !agentOnlinesWhatWasAddedWhileDown:
		r.gap(t, "agentOnlinesWhatWasAddedWhileDown: %s, hot-added while the agent was frozen, is online %q and announced %v after the restart", linkB, online, announced)
	}
	if announced {
		r.cpus = append(r.cpus, cpuB) // hot-added and announced: gone after the reboot, like cpu-a
	}
	r.follow(t, "")
}

// agentFinishesCallbacksAtStop says whether an exec callback in flight at `systemctl stop` runs
// to its end (within the agent's 10 s shutdown grace) with the unit as shipped. It does: the
// unit's KillMode=mixed sends SIGTERM to the agent alone (the default, control-group, would send
// it to the callback too), and the agent's shutdown (notify.Registry.Stop) waits for callbacks
// in flight before it cancels anything.
const agentFinishesCallbacksAtStop = true

// slowCallback is the exec callback of the stop check: it notes that it started, sleeps, and
// notes that it finished, in the unit's state directory (the only place the hardening lets the
// agent, and so its callbacks, write). A SIGTERM is noted too: only systemd sends one (the
// agent ends a callback with SIGKILL to its process group).
const slowCallback = `#!/bin/sh
trap 'echo TERM > /var/lib/hotplug-agent/callback-sigterm; exit 143' TERM
echo "$HOTPLUG_EVENT $HOTPLUG_SYMBOLIC_LINK" > /var/lib/hotplug-agent/callback-started
sleep 4 &
wait $!
echo done > /var/lib/hotplug-agent/callback-done
`

// testSysStop registers a slow exec callback (a config change and a restart, which also checks
// that a restart with a new configuration works), makes it run, and stops the unit while it
// runs: the callback must finish, and the state file must be saved as a clean shutdown.
func testSysStop(t testing.TB, r *sysRun) {
	g := r.g
	orig := g.must(t, "cat /etc/hotplug-agent/config.yaml")
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(orig), &cfg); err != nil {
		t.Fatalf("the packaged config: %v", err)
	}
	if cfg == nil {
		cfg = map[string]any{}
	}
	cfg["callbacks"] = []any{map[string]any{
		"name": "slow", "class": "processor",
		"exec": map[string]any{"command": []string{"/usr/local/bin/slow-callback"}, "timeout": "60s"},
	}}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.must(t, "cp -p /etc/hotplug-agent/config.yaml /root/config.yaml.orig")
	if res := g.exec(t, []byte(slowCallback), "/bin/sh", "-c", "cat > /usr/local/bin/slow-callback && chmod 755 /usr/local/bin/slow-callback"); !res.Success() {
		t.Fatal(res)
	}
	if res := g.exec(t, b, "/bin/sh", "-c", "cat > /etc/hotplug-agent/config.yaml"); !res.Success() {
		t.Fatal(res)
	}
	t.Cleanup(func() {
		g.sh(t, "cp -p /root/config.yaml.orig /etc/hotplug-agent/config.yaml; rm -f /root/config.yaml.orig /usr/local/bin/slow-callback /var/lib/hotplug-agent/callback-*")
	})
	old := g.unit(t, "MainPID")["MainPID"]
	g.must(t, "systemctl restart hotplug-agent.service")
	g.waitActive(t, 30*time.Second, old, "systemctl restart with the slow callback")
	g.waitHTTP(t, 30*time.Second)
	r.follow(t, "")

	// A change for the callback: cpu-a online again (the watchdog check took it offline).
	cpu := r.cpus[0]
	if v := g.guestFile(t, fmt.Sprintf("/sys/devices/system/cpu/cpu%d/online", cpu)); v == "1" {
		g.must(t, fmt.Sprintf("echo 0 > /sys/devices/system/cpu/cpu%d/online", cpu))
		r.take(t, 1, 30*time.Second, fmt.Sprintf("the removal of cpu%d", cpu))
	}
	g.must(t, fmt.Sprintf("echo 1 > /sys/devices/system/cpu/cpu%d/online", cpu))
	r.take(t, 1, 30*time.Second, fmt.Sprintf("the arrival of cpu%d", cpu))
	deadline := time.Now().Add(30 * time.Second)
	for !g.sh(t, "test -e /var/lib/hotplug-agent/callback-started").Success() {
		if time.Now().After(deadline) {
			t.Fatalf("the slow callback did not start within 30 s of the arrival of cpu%d", cpu)
		}
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	res := g.sh(t, "systemctl stop hotplug-agent.service")
	took := time.Since(start)
	if !res.Success() {
		t.Fatalf("systemctl stop: %v", res)
	}
	r.figure(t, "systemctl stop with a 4 s exec callback in flight: %v", took.Round(100*time.Millisecond))
	p := g.unit(t, unitProps...)
	if p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Errorf("after systemctl stop: ActiveState=%s Result=%s; want inactive, success", p["ActiveState"], p["Result"])
	}
	if res := g.sh(t, "cat /var/lib/hotplug-agent/callback-done"); !res.Success() || strings.TrimSpace(res.Stdout) != "done" {
		why := "it was killed with no SIGTERM: the agent's shutdown cancelled it (exec's SIGKILL to its process group)"
		if g.sh(t, "test -e /var/lib/hotplug-agent/callback-sigterm").Success() {
			why = "systemd's SIGTERM to every process of the unit (KillMode=control-group) ended it"
		}
		entries, _ := g.journal(t, r.cursor)
		if agentFinishesCallbacksAtStop {
			t.Errorf("the callback in flight at systemctl stop did not finish: %s; journal:\n%s", why, journalMessages(entries))
		} else {
			r.gap(t, "agentFinishesCallbacksAtStop: the callback in flight at systemctl stop did not finish: %s", why)
		}
	}
	s := g.state(t)
	if !s.CleanShutdown || s.LastEventID < r.lastID {
		t.Errorf("state file after systemctl stop: clean_shutdown %v, last_event_id %d; want true and at least %d", s.CleanShutdown, s.LastEventID, r.lastID)
	}
	_, r.cursor = g.journal(t, r.cursor)
}

// testSysReboot powers the guest off and boots the disk again: the enabled unit starts at boot,
// active through READY=1 with no restart; the hot-added devices are gone (a new QEMU), and the
// agent announces their removals with the IDs that follow the last saved one exactly (the stop
// was orderly).
func testSysReboot(t testing.TB, r *sysRun) {
	saved := r.g.state(t)
	r.g.sh(t, "systemctl start hotplug-agent.service") // running at poweroff, as in production
	r.g.waitActive(t, 30*time.Second, "", "systemctl start")
	r.g.saveJournal()
	// The guest agent stops with the guest: its answer may not come.
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	r.g.ga.Exec(pctx, nil, "systemctl", "--no-block", "poweroff")
	pcancel()
	select {
	case <-r.g.vm.Exited():
	case <-time.After(2 * time.Minute):
		t.Fatalf("the guest did not power off within 2 minutes of systemctl poweroff")
	}
	r.g.stop()
	r.g = bootSystemd(t, r.test, r.prefix+"boot2", r.disk, r.payload, &r.port, r.prom.retarget)
	g := r.g
	p := g.waitActive(t, 60*time.Second, "", "boot")
	toActive := time.Since(g.vm.Started)
	checkNotifyUnit(t, p)
	if p["NRestarts"] != "0" {
		t.Errorf("NRestarts=%s after boot; want 0", p["NRestarts"])
	}
	ready, _ := strconv.ParseInt(p["ActiveEnterTimestampMonotonic"], 10, 64)
	started, _ := strconv.ParseInt(p["ExecMainStartTimestampMonotonic"], 10, 64)
	analyze := strings.TrimSpace(g.sh(t, "systemd-analyze | head -1").Stdout)
	r.figure(t, "boot 2: kernel start to READY=1 %v (the agent's own start to READY=1 %v); QEMU start to is-active seen over qemu-guest-agent %v; %s",
		(time.Duration(ready) * time.Microsecond).Round(10*time.Millisecond), (time.Duration(ready-started) * time.Microsecond).Round(10*time.Millisecond),
		toActive.Round(100*time.Millisecond), analyze)
	g.waitHTTP(t, 30*time.Second)

	// The state before the poweroff, less what QEMU no longer has: every hot-added CPU and
	// block, removed, cause startup, IDs from the last saved + 1 without a gap.
	s := g.subscribe(t, fmt.Sprintf("last_event_id=%d", saved.LastEventID))
	want := map[string]bool{}
	for _, c := range r.cpus {
		want[fmt.Sprintf("/sys/devices/system/cpu/cpu%d", c)] = true
	}
	for _, b := range r.blocks {
		want[fmt.Sprintf("/sys/devices/system/memory/memory%d", b)] = true
	}
	for l := range want {
		if !slices.Contains(saved.Interfaces, stateIface{SymbolicLink: l}) {
			delete(want, l) // not announced as active at the last save (e.g. offline)
		}
	}
	got := s.take(t, len(want), 30*time.Second, fmt.Sprintf("the removals of the %d hot-added interfaces gone after the reboot", len(want)))
	s.quiet(t, 2*time.Second, "the removals after the reboot")
	for i, n := range got {
		if n.SSEEvent != "" || n.ID != saved.LastEventID+uint64(i)+1 || n.Event != "removal" || n.Cause != "startup" || !want[n.SymbolicLink] {
			t.Errorf("after the reboot, notification %d: %v (ID %d, %s); want a removal of one of %v, cause startup, ID %d",
				i, n, n.ID, n.SSEEvent, keys(want), saved.LastEventID+uint64(i)+1)
		}
		delete(want, n.SymbolicLink)
	}
	if len(want) > 0 {
		t.Errorf("no removal announced after the reboot for %v", keys(want))
	}
}

// testSysPurge removes the package with dpkg --purge: nothing of it may remain, neither its files
// nor what the service made (state, runtime and configuration directories), nor the unit.
func testSysPurge(t testing.TB, r *sysRun) {
	g := r.g
	files := strings.Fields(g.must(t, "dpkg -L hotplug-agent"))
	g.must(t, "if mountpoint -q /mnt; then umount /mnt; fi")
	start := time.Now()
	if res := g.sh(t, "dpkg --purge hotplug-agent"); !res.Success() {
		t.Fatalf("dpkg --purge: %v", res)
	}
	t.Logf("dpkg --purge: %v", time.Since(start).Round(100*time.Millisecond))
	if res := g.sh(t, "dpkg -s hotplug-agent"); res.Success() {
		t.Errorf("dpkg -s hotplug-agent succeeds after the purge: %v", res)
	}
	if res := g.sh(t, "systemctl is-active hotplug-agent.service"); strings.TrimSpace(res.Stdout) == "active" {
		t.Errorf("the service is still active after the purge")
	}
	var left []string
	for _, f := range append(files, "/var/lib/hotplug-agent", "/run/hotplug-agent", "/etc/hotplug-agent") {
		// Directories such as /usr/bin stay: they are not the package's alone.
		if strings.Contains(f, "hotplug") && g.sh(t, "test -e "+f+" || test -L "+f).Success() {
			left = append(left, f)
		}
	}
	if out := strings.TrimSpace(g.must(t, "find / \\( -path /proc -o -path /sys \\) -prune -o -name '*hotplug*' -print")); out != "" {
		left = append(left, strings.Split(out, "\n")...)
	}
	if out := strings.TrimSpace(g.sh(t, "dpkg -S hotplug").Stdout); out != "" {
		left = append(left, "dpkg -S hotplug: "+out)
	}
	if out := strings.TrimSpace(g.sh(t, "systemctl list-unit-files 'hotplug*' --no-legend").Stdout); out != "" {
		left = append(left, "unit files: "+out)
	}
	if len(left) > 0 {
		t.Errorf("dpkg --purge left %d things behind:\n%s", len(left), strings.Join(left, "\n"))
	}
}

// prometheus is a Prometheus server on the host that scrapes the guest's forwarded port.
type prometheus struct {
	base   string
	out    *testenv.Buffer
	config string
	cmd    *exec.Cmd
}

// writeConfig writes the configuration that scrapes target every second as job "guest".
func (p *prometheus) writeConfig(target string) error {
	config := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: guest\n    static_configs:\n      - targets: [%q]\n", target)
	return os.WriteFile(p.config, []byte(config), 0o600)
}

// retarget makes Prometheus scrape the agent on another host port (a new configuration, then
// SIGHUP, which makes Prometheus reload it).
func (p *prometheus) retarget(port int) {
	if err := p.writeConfig(fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		p.cmd.Process.Signal(syscall.SIGHUP)
	}
}

// startPrometheus starts Prometheus (scripts/prometheus-deps.sh installs it) scraping target every
// second as job "guest"; it is killed when t ends.
func startPrometheus(t testing.TB, target string) *prometheus {
	t.Helper()
	bin := testenv.Tool(t, "prometheus", "Debian package prometheus; scripts/prometheus-deps.sh installs it")
	dir := t.TempDir()
	port, err := qemu.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := &prometheus{base: fmt.Sprintf("http://127.0.0.1:%d", port), out: &testenv.Buffer{}, config: filepath.Join(dir, "prometheus.yml")}
	if err := p.writeConfig(target); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+p.config,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	p.cmd = cmd
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output (last 40 lines):\n%s", tail(p.out.String(), 40))
		}
	})
	return p
}

// query runs an instant query and returns the value of its single sample, or an error.
func (p *prometheus) query(q string) (float64, error) {
	resp, err := client.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&body); err != nil {
		return 0, fmt.Errorf("%s: %s: %v", q, resp.Status, err)
	}
	if body.Status != "success" || len(body.Data.Result) != 1 {
		return 0, fmt.Errorf("%s: %s %s: %s", q, body.Status, body.Error, b)
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

func (p *prometheus) scalar(t testing.TB, q string) float64 {
	t.Helper()
	v, err := p.query(q)
	if err != nil {
		t.Fatalf("Prometheus: %v", err)
	}
	return v
}

// waitUp waits until Prometheus has scraped the guest's agent successfully.
func (p *prometheus) waitUp(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		v, err := p.query(`up{job="guest"}`)
		if err == nil && v == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus never scraped the guest's agent within %v: up = %v (%v)", d, v, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// reloadRecorder is the exec callback the reload step adds: it notes each notification's event
// in the unit's state directory (the only place the hardening lets callbacks write).
const reloadRecorder = `#!/bin/sh
echo "$HOTPLUG_ID $HOTPLUG_EVENT $HOTPLUG_SYMBOLIC_LINK" >> /var/lib/hotplug-agent/reload-recorded
`

// testSysReload changes the configuration file and runs `systemctl reload hotplug-agent`: a
// callback added takes effect, the online policy changed to memory: none leaves a pc-dimm
// hot-added afterwards offline, the event stream followed across the reload loses and repeats
// nothing, and a file that does not parse fails the reload with its reason in one journal line
// while the agent keeps running its configuration. The packaged configuration is put back.
func testSysReload(t testing.TB, r *sysRun) {
	g := r.g
	ctx := ctxFor(t, 3*time.Minute)
	orig := g.must(t, "cat /etc/hotplug-agent/config.yaml")
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(orig), &cfg); err != nil {
		t.Fatalf("the packaged config: %v", err)
	}
	if cfg == nil {
		cfg = map[string]any{}
	}
	g.must(t, "cp -p /etc/hotplug-agent/config.yaml /root/config.yaml.orig")
	if res := g.exec(t, []byte(reloadRecorder), "/bin/sh", "-c", "cat > /usr/local/bin/reload-recorder && chmod 755 /usr/local/bin/reload-recorder"); !res.Success() {
		t.Fatal(res)
	}
	reload := func() (qemu.ExecResult, time.Duration) {
		start := time.Now()
		res := g.sh(t, "systemctl reload hotplug-agent.service 2>&1")
		return res, time.Since(start)
	}
	t.Cleanup(func() {
		g.sh(t, "cp -p /root/config.yaml.orig /etc/hotplug-agent/config.yaml && systemctl reload hotplug-agent.service; rm -f /root/config.yaml.orig /usr/local/bin/reload-recorder /var/lib/hotplug-agent/reload-recorded")
	})
	pid := g.unit(t, "MainPID")["MainPID"]

	// The new configuration: a callback more, and memory left offline.
	online, _ := cfg["online"].(map[string]any)
	if online == nil {
		online = map[string]any{}
	}
	online["memory"] = "none"
	cfg["online"] = online
	cfg["callbacks"] = append(asSlice(cfg["callbacks"]), map[string]any{
		"name": "reload-recorder", "class": "processor", "exec": map[string]any{"command": []string{"/usr/local/bin/reload-recorder"}},
	})
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res := g.exec(t, b, "/bin/sh", "-c", "cat > /etc/hotplug-agent/config.yaml"); !res.Success() {
		t.Fatal(res)
	}
	res, took := reload()
	if !res.Success() {
		t.Fatalf("systemctl reload: %v", res)
	}
	r.figure(t, "systemctl reload (hotplug-agent reload over the control socket) with a callback added and the online policy changed: %v", took.Round(10*time.Millisecond))
	if p := g.unit(t, "MainPID", "ActiveState"); p["MainPID"] != pid || p["ActiveState"] != "active" {
		t.Fatalf("after systemctl reload: %v; want the same main PID %s, active", p, pid)
	}

	// The stream, followed since before the reload: cpu-a offline and online by the
	// administrator comes as the next two IDs, once each; the added callback gets both.
	cpu := r.cpus[0]
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	before := r.lastID
	g.must(t, fmt.Sprintf("echo 0 > %s/online && echo 1 > %s/online", link, link))
	got := r.take(t, 2, 30*time.Second, "the removal and arrival of "+link+" after the reload")
	if got[0].Event != "removal" || got[1].Event != "arrival" || got[0].ID != before+1 || got[1].ID != before+2 {
		t.Errorf("after the reload, the stream gave %v (IDs %d, %d); want the removal and arrival of %s as IDs %d and %d", got, got[0].ID, got[1].ID, link, before+1, before+2)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec := g.sh(t, "cat /var/lib/hotplug-agent/reload-recorded").Stdout
		if strings.Count(rec, link) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the callback added by the reload recorded %q; want the removal and the arrival of %s", rec, link)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The policy changed: a pc-dimm hot-added now stays offline, and nothing is announced.
	ost := g.vm.QMP.Subscribe()
	if err := g.vm.AddDIMM(ctx, "dimm-r", 256*mib); err != nil {
		t.Fatal(err)
	}
	waitInsertOST(t, ctx, ost, "dimm-r")
	r.all.quiet(t, 3*time.Second, "a pc-dimm hot-added under online: {memory: none}")
	if n := strings.Count(g.sh(t, "grep -l offline /sys/devices/system/memory/memory*/state").Stdout, "\n"); n < 2 {
		t.Errorf("%d memory blocks offline after a 256 MiB pc-dimm under online: {memory: none}; want its two left offline", n)
	}

	// A file that does not parse: refused, in one journal line; the agent runs on.
	_, r.cursor = g.journal(t, r.cursor)
	if res := g.exec(t, []byte("callbacks: [\n"), "/bin/sh", "-c", "cat > /etc/hotplug-agent/config.yaml"); !res.Success() {
		t.Fatal(res)
	}
	if res, _ := reload(); res.Success() {
		t.Errorf("systemctl reload of a file that does not parse: %v; want it to fail", res)
	}
	entries, cursor := g.journal(t, r.cursor)
	r.cursor = cursor
	refused, told := 0, false
	for _, e := range entries {
		refused += strings.Count(e, "configuration refused")
		// ExecReload's own line: what systemctl status shows the operator.
		told = told || (strings.Contains(e, "kept its configuration") && strings.Contains(e, "line"))
	}
	if refused != 1 || !told {
		t.Errorf("the journal has %d lines of the agent's refusal (want one) and the reload command's reason %v:\n%s", refused, told, journalMessages(entries))
	}
	if p := g.unit(t, "MainPID", "ActiveState"); p["MainPID"] != pid || p["ActiveState"] != "active" {
		t.Errorf("after a refused reload: %v; want the same main PID %s, active", p, pid)
	}
	g.must(t, fmt.Sprintf("echo 0 > %s/online && echo 1 > %s/online", link, link))
	r.take(t, 2, 30*time.Second, "the removal and arrival of "+link+" after the refused reload")
	deadline = time.Now().Add(30 * time.Second)
	for strings.Count(g.sh(t, "cat /var/lib/hotplug-agent/reload-recorded").Stdout, link) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the callback stopped after a refused reload: the running configuration did not stay")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// asSlice is v as a YAML sequence; nil for anything else.
func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// testSysAllowedCPUs is the systemd callback under the unit as shipped: with a CPU hot-added
// first, a transient unit with AllowedCPUs=0-1 (every online CPU), and a systemd callback naming
// it added by a reload, the next hot-added CPU joins the unit's AllowedCPUs= (systemctl show) and
// its cgroup's cpuset.cpus, counted on /metrics; a unit it does not name stays as it was.
func testSysAllowedCPUs(t testing.TB, r *sysRun) {
	g := r.g
	ctx := ctxFor(t, 3*time.Minute)
	if c := g.guestFile(t, "/sys/fs/cgroup/cgroup.controllers"); !slices.Contains(strings.Fields(c), "cpuset") {
		t.Fatalf("the guest's cgroup2 has no cpuset controller (%q): AllowedCPUs= cannot apply", c)
	}
	r.follow(t, "")
	addCPU := func(id string) int {
		t.Helper()
		slots, err := g.vm.FreeCPUSlots(ctx)
		if err != nil || len(slots) == 0 {
			t.Fatalf("free CPU slots: %v, %v", slots, err)
		}
		ost := g.vm.QMP.Subscribe()
		if err := g.vm.AddCPU(ctx, id, slots[0]); err != nil {
			t.Fatal(err)
		}
		got := r.take(t, 1, time.Minute, "the processor arrival after device_add "+id)
		waitInsertOST(t, ctx, ost, id)
		if got[0].Event != "arrival" || got[0].CPU == nil || got[0].State != "online" {
			t.Fatalf("after device_add %s: %v; want an online processor arrival", id, got[0])
		}
		return *got[0].CPU
	}
	first := addCPU("cpu-s1")
	online := g.guestFile(t, "/sys/devices/system/cpu/online")
	if online != fmt.Sprintf("0-%d", first) || first != 1 {
		t.Fatalf("online CPUs %q after the first hot-add (cpu%d); want 0-1", online, first)
	}

	// The units: one the callback names, one it does not, both allowed every online CPU.
	g.must(t, "systemd-run --unit=wl-named -p AllowedCPUs=0-1 /bin/sleep infinity && systemd-run --unit=wl-other -p AllowedCPUs=0-1 /bin/sleep infinity")
	orig := g.must(t, "cat /etc/hotplug-agent/config.yaml")
	g.must(t, "cp -p /etc/hotplug-agent/config.yaml /root/config.yaml.orig")
	t.Cleanup(func() {
		g.sh(t, "systemctl stop wl-named.service wl-other.service; rm -rf /run/systemd/system.control/wl-*; systemctl daemon-reload; cp -p /root/config.yaml.orig /etc/hotplug-agent/config.yaml && systemctl reload hotplug-agent.service; rm -f /root/config.yaml.orig")
	})
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(orig), &cfg); err != nil {
		t.Fatalf("the packaged config: %v", err)
	}
	if cfg == nil {
		cfg = map[string]any{}
	}
	cfg["callbacks"] = append(asSlice(cfg["callbacks"]), map[string]any{
		"name": "work-cpus", "class": "processor", "systemd": map[string]any{"units": []string{"wl-named.service"}},
	})
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res := g.exec(t, b, "/bin/sh", "-c", "cat > /etc/hotplug-agent/config.yaml"); !res.Success() {
		t.Fatal(res)
	}
	if res := g.sh(t, "systemctl reload hotplug-agent.service 2>&1"); !res.Success() {
		t.Fatalf("systemctl reload with the systemd callback: %v", res)
	}

	start := time.Now()
	second := addCPU("cpu-s2")
	want := fmt.Sprintf("0-%d", second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := strings.TrimSpace(g.must(t, "systemctl show -p AllowedCPUs --value wl-named.service"))
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wl-named.service AllowedCPUs=%q 30 s after cpu%d was hot-added; want %s", got, second, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.figure(t, "systemd callback: CPU device_add to the unit's AllowedCPUs=%s seen in systemctl show: %v", want, time.Since(start).Round(10*time.Millisecond))
	if got := g.guestFile(t, "/sys/fs/cgroup/system.slice/wl-named.service/cpuset.cpus"); got != want {
		t.Errorf("wl-named.service's cgroup cpuset.cpus = %q; want %s (systemd applies the runtime change)", got, want)
	}
	if got := strings.TrimSpace(g.must(t, "systemctl show -p AllowedCPUs --value wl-other.service")); got != "0-1" {
		t.Errorf("wl-other.service, not named, AllowedCPUs=%q; want 0-1 as it was", got)
	}
	if got := strings.TrimSpace(g.must(t, "ls /etc/systemd/system.control 2>/dev/null | grep -c wl-named || true")); got != "0" {
		t.Errorf("the persistent drop-ins name wl-named.service (%s); want a runtime change only", got)
	}
	m := g.metrics(t)
	if v := m.get("hotplug_agent_systemd_writes_total", "callback", "work-cpus", "result", "ok", "unit", "wl-named.service"); v != 1 {
		t.Errorf("hotplug_agent_systemd_writes_total{callback=work-cpus,unit=wl-named.service,result=ok} = %v; want 1", v)
	}
	entries, cursor := g.journal(t, r.cursor)
	r.cursor = cursor
	for _, e := range entries {
		if strings.Contains(e, "systemd callback: unit widened") {
			t.Logf("journal: %s", e)
		}
	}
}

// testSysCpusetV2 is the cpuset callback on the guest's cgroup v2 (mounted by systemd), with the
// unit's ProtectControlGroups=yes turned off by a drop-in as the README says: a cgroup the
// configuration names, with an explicit cpuset.cpus of every online CPU, gains a hot-added CPU;
// one it does not name keeps its list.
func testSysCpusetV2(t testing.TB, r *sysRun) {
	g := r.g
	ctx := ctxFor(t, 3*time.Minute)
	online := g.guestFile(t, "/sys/devices/system/cpu/online")
	g.must(t, "cp -p /etc/hotplug-agent/config.yaml /root/config.yaml.orig")
	t.Cleanup(func() {
		g.sh(t, "rmdir /sys/fs/cgroup/wl-named /sys/fs/cgroup/wl-other; systemctl stop wl-keep.service; rm -rf /run/systemd/system.control/wl-*; rm -rf /etc/systemd/system/hotplug-agent.service.d; cp -p /root/config.yaml.orig /etc/hotplug-agent/config.yaml; rm -f /root/config.yaml.orig; systemctl daemon-reload; systemctl restart hotplug-agent.service")
	})
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(g.must(t, "cat /etc/hotplug-agent/config.yaml")), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg == nil {
		cfg = map[string]any{}
	}
	cfg["callbacks"] = append(asSlice(cfg["callbacks"]), map[string]any{
		"name": "named-cpus", "class": "processor", "cpuset": map[string]any{"root": "/sys/fs/cgroup", "cgroups": []string{"wl-named"}},
	})
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res := g.exec(t, b, "/bin/sh", "-c", "cat > /etc/hotplug-agent/config.yaml"); !res.Success() {
		t.Fatal(res)
	}
	g.must(t, "mkdir -p /etc/systemd/system/hotplug-agent.service.d && printf '[Service]\\nProtectControlGroups=no\\n' > /etc/systemd/system/hotplug-agent.service.d/cgroup.conf && systemctl daemon-reload && systemctl restart hotplug-agent.service")
	g.waitHTTP(t, time.Minute)
	r.follow(t, "")
	// systemd enables the cpuset controller at the root only while a unit needs it (and takes it
	// away at its next daemon-reload otherwise): a unit with AllowedCPUs= keeps it on.
	g.must(t, "systemd-run --unit=wl-keep -p AllowedCPUs=0 /bin/sleep infinity && grep -qw cpuset /sys/fs/cgroup/cgroup.subtree_control")
	g.must(t, `mkdir /sys/fs/cgroup/wl-named /sys/fs/cgroup/wl-other
echo `+online+` > /sys/fs/cgroup/wl-named/cpuset.cpus
echo `+online+` > /sys/fs/cgroup/wl-other/cpuset.cpus`)

	slots, err := g.vm.FreeCPUSlots(ctx)
	if err != nil || len(slots) == 0 {
		t.Fatalf("free CPU slots: %v, %v", slots, err)
	}
	start := time.Now()
	if err := g.vm.AddCPU(ctx, "cpu-v2", slots[0]); err != nil {
		t.Fatal(err)
	}
	got := r.take(t, 1, time.Minute, "the processor arrival after device_add cpu-v2")
	if got[0].Event != "arrival" || got[0].CPU == nil {
		t.Fatalf("after device_add cpu-v2: %v; want a processor arrival", got[0])
	}
	cpu := *got[0].CPU
	want := g.guestFile(t, "/sys/devices/system/cpu/online")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		v := g.guestFile(t, "/sys/fs/cgroup/wl-named/cpuset.cpus")
		if v == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wl-named/cpuset.cpus = %q 30 s after cpu%d was hot-added; want %s", v, cpu, want)
		}
	}
	r.figure(t, "cpuset callback on cgroup v2: CPU device_add to the named cgroup's cpuset.cpus=%s: %v", want, time.Since(start).Round(10*time.Millisecond))
	if v := g.guestFile(t, "/sys/fs/cgroup/wl-other/cpuset.cpus"); v != online {
		t.Errorf("wl-other, not named, has cpuset.cpus %q; want %s as written", v, online)
	}
	m := g.metrics(t)
	if v := m.get("hotplug_agent_cpuset_writes_total", "callback", "named-cpus", "cgroup", "wl-named", "result", "ok"); v != 1 {
		t.Errorf("hotplug_agent_cpuset_writes_total{callback=named-cpus,cgroup=wl-named,result=ok} = %v; want 1", v)
	}
}

// TestIntegrationCpusetNUMA boots the systemd guest with a second NUMA node that has neither
// CPUs nor memory, installs the package, turns ProtectControlGroups= off by a drop-in and
// configures a cpuset callback for memory on the guest's cgroup v2: a pc-dimm hot-added into
// node 1 (onlined by the agent under the packaged policy) makes the named cgroup's cpuset.mems
// 0-1; a cgroup not named keeps 0.
func TestIntegrationCpusetNUMA(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Debian guest with systemd: not in -short mode")
	}
	prepareSystemd(t)
	disk, payload, port := sysFiles(t)
	g := bootSystemd(t, t.Name(), "numa", disk, payload, &port, func(int) {},
		"-object", "memory-backend-ram,id=ram0,size="+sysGuestMemory,
		"-numa", "node,nodeid=0,cpus=0-3,memdev=ram0", "-numa", "node,nodeid=1")
	defer g.stop()
	defer logIfFailed(t, g.guest)
	ctx := ctxFor(t, 3*time.Minute)
	g.must(t, "mount -o ro /dev/vdb /mnt && dpkg -i /mnt/"+filepath.Base(sysEnv.deb))
	g.waitActive(t, 30*time.Second, "", "dpkg -i")
	if got := g.guestFile(t, "/sys/devices/system/node/has_memory"); got != "0" {
		t.Fatalf("nodes with memory at boot: %q; want 0 (node 1 has none)", got)
	}
	cfg := "online: {cpu: online, memory: online_movable}\ncallbacks:\n  - name: named-mems\n    class: memory\n    cpuset: {root: /sys/fs/cgroup, cgroups: [wl-named]}\n"
	if res := g.exec(t, []byte(cfg), "/bin/sh", "-c", "cat > /etc/hotplug-agent/config.yaml"); !res.Success() {
		t.Fatal(res)
	}
	g.must(t, "mkdir -p /etc/systemd/system/hotplug-agent.service.d && printf '[Service]\\nProtectControlGroups=no\\n' > /etc/systemd/system/hotplug-agent.service.d/cgroup.conf && systemctl daemon-reload && systemctl restart hotplug-agent.service")
	g.waitHTTP(t, time.Minute)
	// A unit with AllowedCPUs= keeps systemd's cpuset controller on at the root.
	g.must(t, "systemd-run --unit=wl-keep -p AllowedCPUs=0 /bin/sleep infinity && grep -qw cpuset /sys/fs/cgroup/cgroup.subtree_control")
	g.must(t, `mkdir /sys/fs/cgroup/wl-named /sys/fs/cgroup/wl-other
echo 0 > /sys/fs/cgroup/wl-named/cpuset.mems
echo 0 > /sys/fs/cgroup/wl-other/cpuset.mems`)

	start := time.Now()
	if err := g.vm.AddDIMMOnNode(ctx, "dimm-n1", 256*mib, 1); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		v := g.guestFile(t, "/sys/fs/cgroup/wl-named/cpuset.mems")
		if v == "0-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wl-named/cpuset.mems = %q a minute after a pc-dimm was hot-added into node 1 (nodes with memory: %s); want 0-1",
				v, g.guestFile(t, "/sys/devices/system/node/has_memory"))
		}
	}
	t.Logf("figure: cpuset callback: pc-dimm device_add into CPU-less node 1 to the named cgroup's cpuset.mems=0-1: %v", time.Since(start).Round(10*time.Millisecond))
	if v := g.guestFile(t, "/sys/fs/cgroup/wl-other/cpuset.mems"); v != "0" {
		t.Errorf("wl-other, not named, has cpuset.mems %q; want 0 as written", v)
	}
	if v := g.metrics(t).get("hotplug_agent_cpuset_writes_total", "callback", "named-mems", "cgroup", "wl-named", "result", "ok"); v != 1 {
		t.Errorf("hotplug_agent_cpuset_writes_total{callback=named-mems,cgroup=wl-named,result=ok} = %v; want 1", v)
	}
}

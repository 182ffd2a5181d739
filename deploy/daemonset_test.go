//go:build linux

package deploy

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// TestIntegrationDaemonSet runs the DaemonSet as written, without Kubernetes: the container's
// root is built from deploy/container/Containerfile as `make image` would build the image, and
// the test binary itself, as a small container runtime (runPod), starts the binary in it with
// what the manifest says and nothing more: the image's entrypoint with the container's args and
// env; a read-only root when readOnlyRootFilesystem says so; each volume mounted where its
// volumeMount says, read-only when it says; the capabilities of a container runtime minus those
// the manifest drops plus those it adds; its user; no privilege escalation; the host's network
// namespace only with hostNetwork, and a PID namespace of its own. The agent must become ready by
// the manifest's readiness probe, and announce a real CPU of this machine going offline and online
// on /events; through its control socket (as kubectl exec reaches it) take that CPU offline and
// online itself; stopped as Kubernetes stops it and started again, it must find its state.
//
// Where it differs from a node, on purpose: hostPath volumes outside /sys are taken under a
// temporary directory instead of the host's root (the test must not write /var/lib); the
// manifest's port is used when it is free here, else another one (said in the log); seccomp,
// AppArmor, masked /proc paths, resource limits and the files the kubelet adds (/etc/hosts,
// /etc/resolv.conf, /dev/termination-log) are left out.
func TestIntegrationDaemonSet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent's container and cycles a CPU: an integration test, left out with -short")
	}
	testenv.RequireRoot(t)
	testenv.Tool(t, "make", "Debian package make")
	cpu := testenv.HotpluggableCPU(t)

	var (
		ds appsv1.DaemonSet
		cm corev1.ConfigMap
	)
	decodeStrict(t, filepath.Join(k8sDir, "daemonset.yaml"), &ds, "apps/v1", "DaemonSet")
	decodeStrict(t, filepath.Join(k8sDir, "configmap.yaml"), &cm, "v1", "ConfigMap")
	dir := t.TempDir()
	img := buildImageRoot(t, dir)
	hostRoot := filepath.Join(dir, "host")
	pod := podFromManifest(t, &ds, []corev1.ConfigMap{cm}, img, hostRoot, filepath.Join(dir, "volumes"))

	p := startPod(t, pod)
	waitFor(t, time.Minute, func() (bool, string) {
		code, _, err := httpGet(pod.ReadyURL)
		return code == http.StatusOK, fmt.Sprintf("readiness probe %s: %d %v", pod.ReadyURL, code, err)
	}, p)
	checkConfinement(t, p.pid, pod)

	testenv.LockCPUs(t)
	events := subscribeEvents(t, strings.TrimSuffix(pod.ReadyURL, pod.ReadyPath)+"/events?class=processor")
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	testenv.SetCPUOnline(t, cpu, false)
	testenv.SetCPUOnline(t, cpu, true)
	for _, want := range []string{"removal", "arrival"} {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("/events ended while waiting for the %s of %s", want, link)
			}
			if e.Event != want || e.SymbolicLink != link {
				t.Errorf("/events: %s of %s, want the %s of %s", e.Event, e.SymbolicLink, want, link)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("/events: no %s of %s within 30 s", want, link)
		}
	}

	// kubectl exec <pod> -- hotplug-agent offline|online cpu N: the agent itself, with the
	// privileges the manifest grants, takes the CPU offline and online again.
	nsenter := testenv.Tool(t, "nsenter", "Debian package util-linux")
	for _, op := range []struct{ verb, event string }{{"offline", "removal"}, {"online", "arrival"}} {
		out, err := exec.Command(nsenter, "--target", strconv.Itoa(p.pid), "--mount", "--",
			img.Entrypoint[0], op.verb, "cpu", strconv.Itoa(cpu)).CombinedOutput()
		if want := fmt.Sprintf("cpu %d: success", cpu); err != nil || strings.TrimSpace(string(out)) != want {
			t.Fatalf("kubectl exec ... hotplug-agent %s cpu %d: %v: %q, want %q", op.verb, cpu, err, out, want)
		}
		select {
		case e := <-events:
			if e.Event != op.event || e.SymbolicLink != link {
				t.Errorf("/events after %s: %s of %s, want the %s of %s", op.verb, e.Event, e.SymbolicLink, op.event, link)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("/events: no %s of %s within 30 s of %s", op.event, link, op.verb)
		}
	}

	// Kubernetes stops a container with SIGTERM; the next pod on this node finds the state.
	if state := pod.StateOnHost; state != "" {
		p.stop(t)
		if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("state file on the node: %v (%v), want a file of mode 0600", fi, err)
		}
		again := startPod(t, pod)
		waitFor(t, time.Minute, func() (bool, string) {
			return strings.Contains(again.out.String(), `msg="state restored"`), "the restarted pod's agent to restore its state"
		}, again)
	} else {
		t.Errorf("--path.state is not on a hostPath volume: the state is lost with the pod")
	}
}

// subscribeEvents reads the SSE stream at url until the test ends.
func subscribeEvents(t *testing.T, url string) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET %s: %v %v", url, resp, err)
	}
	ch := make(chan sseEvent, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var e sseEvent
				if json.Unmarshal([]byte(data), &e) == nil {
					ch <- e
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return ch
}

type sseEvent struct {
	Event        string `json:"event"`
	SymbolicLink string `json:"symbolic_link"`
}

// checkConfinement checks, from this side, that the process pid runs as pod says: the runtime
// must not pass for one that enforces nothing.
func checkConfinement(t *testing.T, pid int, pod *podSpec) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	var keep uint64
	for _, c := range pod.Runtime.Caps {
		keep |= 1 << c
	}
	bnd, _ := strconv.ParseUint(fields["CapBnd"], 16, 64)
	eff, _ := strconv.ParseUint(fields["CapEff"], 16, 64)
	nnp := "0"
	if pod.Runtime.NoNewPrivs {
		nnp = "1"
	}
	if bnd&^keep != 0 || eff&^keep != 0 || fields["NoNewPrivs"] != nnp || strings.Fields(fields["Uid"])[1] != strconv.Itoa(pod.Runtime.UID) {
		t.Errorf("the agent runs with CapBnd %s, CapEff %s, NoNewPrivs %s, Uid %s; the manifest allows capabilities %016x, no_new_privs %s, uid %d",
			fields["CapBnd"], fields["CapEff"], fields["NoNewPrivs"], fields["Uid"], keep, nnp, pod.Runtime.UID)
	}
	mountinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	readOnly := map[string]bool{} // mount point, as the agent sees it -> read-only
	for _, line := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 {
			readOnly[f[4]] = slices.Contains(strings.Split(f[5], ","), "ro")
		}
	}
	want := map[string]bool{"/": pod.Runtime.ReadOnlyRoot}
	for _, m := range pod.Runtime.Mounts {
		if m.Volume {
			want[m.Target] = m.ReadOnly
		}
	}
	for path, ro := range want {
		if got, ok := readOnly[path]; !ok || got != ro {
			t.Errorf("the agent sees %s mounted (%v) read-only %v, want read-only %v", path, ok, got, ro)
		}
	}
	// Under a recursively read-only volume, every mount is read-only but the writable volumes
	// mounted over it: the host's cgroup file systems under /sys are not the agent's to write.
	under := func(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }
	for _, m := range pod.Runtime.Mounts {
		if !m.Recursive {
			continue
		}
		for path, ro := range readOnly {
			if !under(path, m.Target) || ro {
				continue
			}
			if !slices.ContainsFunc(pod.Runtime.Mounts, func(w mountSpec) bool { return w.Volume && !w.ReadOnly && under(path, w.Target) }) {
				t.Errorf("the agent sees %s, under the recursively read-only %s, mounted writable", path, m.Target)
			}
		}
	}
}

// The container runtime: a podSpec is what the manifest says, resolved against the image and this
// machine; runtimeSpec is what runPod applies, in a child process that becomes the agent.

// podSpec is a pod of the manifest, ready to run here.
type podSpec struct {
	Runtime     runtimeSpec
	ReadyURL    string // the readiness probe's URL
	ReadyPath   string // its path
	StateOnHost string // where the agent's --path.state lies on the node, when a hostPath holds it
}

// runtimeSpec is what runPod does, in order: mount, confine, exec.
type runtimeSpec struct {
	Root         string      // the image's root file system
	Mounts       []mountSpec // in the order to mount them
	ReadOnlyRoot bool
	Caps         []int // the capabilities kept (bounding, permitted, effective); the rest are dropped
	NoNewPrivs   bool
	UID, GID     int
	Env          []string
	Dir          string
	Argv         []string
	NewNet       bool // a network namespace of its own (hostNetwork: false)
}

type mountSpec struct {
	Source   string // host path, for binds
	Target   string // in the container
	Type     string // bind, proc, sysfs, tmpfs
	Data     string // a tmpfs's options
	ReadOnly bool
	// Recursive: recursiveReadOnly (IfPossible or Enabled): the mounts under the volume's own,
	// such as the cgroup file systems under /sys, are read-only too.
	Recursive bool
	Volume    bool // a volumeMount of the manifest (the rest is what every runtime mounts)
}

// imageConfig is a built image: its root and the config of its Containerfile.
type imageConfig struct {
	Root       string
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkDir    string
}

// buildImageRoot builds the image of deploy/container/Containerfile into dir/rootfs from the
// context `make image-context` stages, as `make image` would, but without a container tool: it
// knows only the instructions an image FROM scratch needs and fails on any other.
func buildImageRoot(t *testing.T, dir string) imageConfig {
	t.Helper()
	ctx := filepath.Join(dir, "context")
	mk := exec.Command("make", "-C", "..", "image-context", "IMAGE_CONTEXT="+ctx, "BIN="+filepath.Join(dir, "bin", "hotplug-agent"))
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make image-context: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(ctx, "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	img := imageConfig{Root: filepath.Join(dir, "rootfs")}
	if err := os.Mkdir(img.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	execForm := func(line, rest string) []string {
		var v []string
		if err := json.Unmarshal([]byte(rest), &v); err != nil {
			t.Fatalf("Containerfile: %q: only the exec form [\"...\"] runs in an image without a shell", line)
		}
		return v
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		op, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(op) {
		case "FROM":
			if rest != "scratch" {
				t.Fatalf("Containerfile: %q: only FROM scratch builds here, offline", line)
			}
		case "COPY":
			f := strings.Fields(rest)
			if len(f) != 2 || strings.HasPrefix(f[0], "--") {
				t.Fatalf("Containerfile: %q: this builder knows COPY <file> <path> only", line)
			}
			dst := filepath.Join(img.Root, f[1])
			if strings.HasSuffix(f[1], "/") {
				dst = filepath.Join(dst, filepath.Base(f[0]))
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("cp", "--preserve=mode", filepath.Join(ctx, f[0]), dst).CombinedOutput(); err != nil {
				t.Fatalf("Containerfile: %q: %v %s", line, err, out)
			}
		case "ENTRYPOINT":
			img.Entrypoint = execForm(line, rest)
		case "CMD":
			img.Cmd = execForm(line, rest)
		case "ENV":
			k, v, ok := strings.Cut(rest, "=")
			if !ok {
				t.Fatalf("Containerfile: %q: this builder knows ENV KEY=value only", line)
			}
			img.Env = append(img.Env, k+"="+v)
		case "USER":
			img.User = rest
		case "WORKDIR":
			img.WorkDir = rest
		case "LABEL", "EXPOSE":
		default:
			t.Fatalf("Containerfile: %q: not an instruction this builder knows", line)
		}
	}
	if len(img.Entrypoint) == 0 {
		t.Fatal("Containerfile: no ENTRYPOINT")
	}
	return img
}

// containerdCaps are the capabilities a container gets from containerd (and CRI-O) before its
// securityContext adds or drops any.
var containerdCaps = []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

var capNumbers = map[string]int{
	"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"FOWNER": unix.CAP_FOWNER, "FSETID": unix.CAP_FSETID, "KILL": unix.CAP_KILL, "SETGID": unix.CAP_SETGID,
	"SETUID": unix.CAP_SETUID, "SETPCAP": unix.CAP_SETPCAP, "LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "NET_BROADCAST": unix.CAP_NET_BROADCAST, "NET_ADMIN": unix.CAP_NET_ADMIN,
	"NET_RAW": unix.CAP_NET_RAW, "IPC_LOCK": unix.CAP_IPC_LOCK, "IPC_OWNER": unix.CAP_IPC_OWNER,
	"SYS_MODULE": unix.CAP_SYS_MODULE, "SYS_RAWIO": unix.CAP_SYS_RAWIO, "SYS_CHROOT": unix.CAP_SYS_CHROOT,
	"SYS_PTRACE": unix.CAP_SYS_PTRACE, "SYS_PACCT": unix.CAP_SYS_PACCT, "SYS_ADMIN": unix.CAP_SYS_ADMIN,
	"SYS_BOOT": unix.CAP_SYS_BOOT, "SYS_NICE": unix.CAP_SYS_NICE, "SYS_RESOURCE": unix.CAP_SYS_RESOURCE,
	"SYS_TIME": unix.CAP_SYS_TIME, "SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG, "MKNOD": unix.CAP_MKNOD,
	"LEASE": unix.CAP_LEASE, "AUDIT_WRITE": unix.CAP_AUDIT_WRITE, "AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL,
	"SETFCAP": unix.CAP_SETFCAP, "MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE, "MAC_ADMIN": unix.CAP_MAC_ADMIN,
	"SYSLOG": unix.CAP_SYSLOG, "WAKE_ALARM": unix.CAP_WAKE_ALARM, "BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND,
	"AUDIT_READ": unix.CAP_AUDIT_READ, "PERFMON": unix.CAP_PERFMON, "BPF": unix.CAP_BPF,
	"CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// capabilities returns the capabilities a container keeps: the runtime's, less drop, plus add.
func capabilities(t *testing.T, c *corev1.Capabilities) []int {
	t.Helper()
	keep := map[string]bool{}
	for _, n := range containerdCaps {
		keep[n] = true
	}
	name := func(c corev1.Capability) string { return strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_") }
	if c != nil {
		for _, d := range c.Drop {
			if name(d) == "ALL" {
				clear(keep)
			}
			delete(keep, name(d))
		}
		for _, a := range c.Add {
			if name(a) == "ALL" {
				for n := range capNumbers {
					keep[n] = true
				}
			}
			keep[name(a)] = true
		}
	}
	var out []int
	for n := range keep {
		num, ok := capNumbers[n]
		if !ok && n != "ALL" {
			t.Fatalf("DaemonSet: capability %q is not one Linux has", n)
		}
		if ok {
			out = append(out, num)
		}
	}
	slices.Sort(out)
	return out
}

// podFromManifest resolves the DaemonSet's one container against the image img, the ConfigMaps
// cms, and this machine. hostPath volumes under /sys are this machine's; the others lie under
// hostRoot. Volumes of other kinds live under volumes. Whatever this runtime cannot do as
// Kubernetes would fails t, rather than being left out.
func podFromManifest(t *testing.T, ds *appsv1.DaemonSet, cms []corev1.ConfigMap, img imageConfig, hostRoot, volumes string) *podSpec {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) > 0 {
		t.Fatalf("DaemonSet: %d containers and %d init containers; this runtime runs one container", len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]
	rs := runtimeSpec{Root: img.Root, NewNet: !spec.HostNetwork, Dir: "/"}

	// The command line, as Kubernetes combines it with the image's.
	switch {
	case len(c.Command) > 0:
		rs.Argv = append(slices.Clone(c.Command), c.Args...)
	case len(c.Args) > 0:
		rs.Argv = append(slices.Clone(img.Entrypoint), c.Args...)
	default:
		rs.Argv = append(slices.Clone(img.Entrypoint), img.Cmd...)
	}
	for _, a := range rs.Argv {
		if strings.Contains(a, "$(") {
			t.Fatalf("DaemonSet: argument %q refers to a variable; this runtime does not expand them", a)
		}
	}
	if img.WorkDir != "" {
		rs.Dir = img.WorkDir
	}
	if c.WorkingDir != "" {
		rs.Dir = c.WorkingDir
	}
	hostname, _ := os.Hostname()
	rs.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + hostname, "HOME=/"}, img.Env...)
	if len(c.EnvFrom) > 0 {
		t.Fatal("DaemonSet: envFrom: not done by this runtime")
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Fatalf("DaemonSet: env %s: valueFrom is not done by this runtime", e.Name)
		}
		rs.Env = append(rs.Env, e.Name+"="+e.Value)
	}

	// Who it runs as, and with what privileges.
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Fatal("DaemonSet: a privileged container: this runtime does not emulate one")
	}
	uid, gid, _ := strings.Cut(img.User, ":")
	if psc := spec.SecurityContext; psc != nil && psc.RunAsUser != nil {
		uid = strconv.FormatInt(*psc.RunAsUser, 10)
	}
	if psc := spec.SecurityContext; psc != nil && psc.RunAsGroup != nil {
		gid = strconv.FormatInt(*psc.RunAsGroup, 10)
	}
	if sc.RunAsUser != nil {
		uid = strconv.FormatInt(*sc.RunAsUser, 10)
	}
	if sc.RunAsGroup != nil {
		gid = strconv.FormatInt(*sc.RunAsGroup, 10)
	}
	var err error
	if rs.UID, err = strconv.Atoi(cmp.Or(uid, "0")); err != nil {
		t.Fatalf("user %q: this runtime takes numeric ids only", uid)
	}
	if rs.GID, err = strconv.Atoi(cmp.Or(gid, "0")); err != nil {
		t.Fatalf("group %q: this runtime takes numeric ids only", gid)
	}
	rs.Caps = capabilities(t, sc.Capabilities)
	rs.NoNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	rs.ReadOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem

	// What every container gets, then the volumes, parents before what is mounted in them.
	rs.Mounts = []mountSpec{
		{Target: "/proc", Type: "proc"},
		{Target: "/dev", Type: "tmpfs", Data: "mode=755,size=65536k"},
		{Source: "/dev/null", Target: "/dev/null", Type: "bind"},
		{Source: "/dev/zero", Target: "/dev/zero", Type: "bind"},
		{Source: "/dev/urandom", Target: "/dev/urandom", Type: "bind"},
		{Target: "/sys", Type: "sysfs", ReadOnly: true},
	}
	sources := map[string]mountSpec{} // volume name -> what to mount (Target and ReadOnly left out)
	cmByName := map[string]corev1.ConfigMap{}
	for _, cm := range cms {
		cmByName[cm.Name] = cm
	}
	for _, v := range spec.Volumes {
		switch {
		case v.HostPath != nil:
			src := v.HostPath.Path
			if src != "/sys" && !strings.HasPrefix(src, "/sys/") {
				src = filepath.Join(hostRoot, src)
			}
			typ := corev1.HostPathUnset
			if v.HostPath.Type != nil {
				typ = *v.HostPath.Type
			}
			switch typ {
			case corev1.HostPathUnset:
			case corev1.HostPathDirectoryOrCreate:
				// The kubelet creates it with mode 0755, owned by itself (root).
				if err := os.MkdirAll(src, 0o755); err != nil {
					t.Fatal(err)
				}
			case corev1.HostPathDirectory:
				if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
					t.Fatalf("volume %s: hostPath %s is not a directory here: the pod would not start (%v)", v.Name, v.HostPath.Path, err)
				}
			default:
				t.Fatalf("volume %s: hostPath type %s is not done by this runtime", v.Name, typ)
			}
			sources[v.Name] = mountSpec{Source: src, Type: "bind"}
		case v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory:
			// A tmpfs of the kubelet's: its root has tmpfs's own mode, 1777.
			m := mountSpec{Type: "tmpfs"}
			if l := v.EmptyDir.SizeLimit; l != nil {
				m.Data = fmt.Sprintf("size=%d", l.Value())
			}
			sources[v.Name] = m
		case v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumDefault:
			// A directory of the kubelet's, mode 0777.
			src := filepath.Join(volumes, v.Name)
			if err := os.MkdirAll(src, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(src, 0o777); err != nil {
				t.Fatal(err)
			}
			sources[v.Name] = mountSpec{Source: src, Type: "bind"}
		case v.ConfigMap != nil:
			cm, ok := cmByName[v.ConfigMap.Name]
			if !ok || len(v.ConfigMap.Items) > 0 {
				t.Fatalf("volume %s: ConfigMap %s: not among the manifests, or with items (not done by this runtime)", v.Name, v.ConfigMap.Name)
			}
			mode := os.FileMode(0o644)
			if v.ConfigMap.DefaultMode != nil {
				mode = os.FileMode(*v.ConfigMap.DefaultMode)
			}
			sources[v.Name] = mountSpec{Source: configMapVolume(t, filepath.Join(volumes, v.Name), cm.Data, mode), Type: "bind"}
		default:
			t.Fatalf("volume %s: a kind this runtime does not make", v.Name)
		}
	}
	vms := slices.Clone(c.VolumeMounts)
	// containerd orders mounts by the depth of their path, so that a parent is mounted first.
	slices.SortStableFunc(vms, func(a, b corev1.VolumeMount) int {
		return strings.Count(filepath.Clean(a.MountPath), "/") - strings.Count(filepath.Clean(b.MountPath), "/")
	})
	for _, m := range vms {
		ms, ok := sources[m.Name]
		if !ok || m.SubPath != "" || m.SubPathExpr != "" || m.MountPropagation != nil {
			t.Fatalf("volumeMount %s: no such volume, or subPath or mountPropagation (not done by this runtime)", m.Name)
		}
		ms.Target, ms.ReadOnly, ms.Volume = m.MountPath, m.ReadOnly, true
		if rro := m.RecursiveReadOnly; rro != nil && *rro != corev1.RecursiveReadOnlyDisabled {
			if !m.ReadOnly {
				t.Fatalf("volumeMount %s: recursiveReadOnly without readOnly (Kubernetes refuses it)", m.Name)
			}
			ms.Recursive = true
		}
		rs.Mounts = append(rs.Mounts, ms)
	}

	pod := &podSpec{Runtime: rs}
	// Where the state file lies: the agent's --path.state, or its default as root.
	state := "/var/lib/hotplug-agent/state.json"
	listenAt := -1
	for i, a := range rs.Argv {
		if v, ok := strings.CutPrefix(a, "--path.state="); ok {
			state = v
		}
		if strings.HasPrefix(a, "--web.listen-address=") {
			listenAt = i
		}
	}
	for _, m := range slices.Backward(rs.Mounts) {
		if rel, err := filepath.Rel(m.Target, state); m.Volume && !m.ReadOnly && err == nil && !strings.HasPrefix(rel, "..") {
			if strings.HasPrefix(m.Source, hostRoot+"/") {
				pod.StateOnHost = filepath.Join(m.Source, rel)
			}
			break
		}
	}

	// The readiness probe, on the loopback address: with hostNetwork the pod's IP is the node's.
	probe := c.ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		t.Fatal("DaemonSet: no HTTP readiness probe")
	}
	port := probe.HTTPGet.Port.IntValue()
	for _, p := range c.Ports {
		if probe.HTTPGet.Port.String() == p.Name {
			port = int(p.ContainerPort)
		}
	}
	if port <= 0 {
		t.Fatalf("DaemonSet: readiness probe port %s is no port of the container", probe.HTTPGet.Port.String())
	}
	if l, err := net.Listen("tcp", fmt.Sprintf(":%d", port)); err == nil {
		l.Close()
	} else if listenAt >= 0 {
		// Another agent, or another run of this test, has the manifest's port: take another.
		addr := freeAddr(t)
		t.Logf("port %d is taken here (%v): the agent listens on %s instead", port, err, addr)
		rs.Argv[listenAt] = "--web.listen-address=" + addr
		_, p, _ := net.SplitHostPort(addr)
		port, _ = strconv.Atoi(p)
	} else {
		t.Fatalf("port %d is taken here, and the args name no --web.listen-address to move: %v", port, err)
	}
	pod.Runtime = rs
	pod.ReadyPath = probe.HTTPGet.Path
	pod.ReadyURL = fmt.Sprintf("http://127.0.0.1:%d%s", port, probe.HTTPGet.Path)
	return pod
}

// configMapVolume writes data into dir as the kubelet does: each key a symbolic link through
// ..data to a timestamped directory that holds the files.
func configMapVolume(t *testing.T, dir string, data map[string]string, mode os.FileMode) string {
	t.Helper()
	ts := "..2026_01_01_00_00_00.000000001"
	if err := os.MkdirAll(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, ts, k), []byte(v), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, ts, k), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// podRuntimeEnv names the file of a runtimeSpec: with it set, the test binary is the runtime
// (see TestMain) and becomes the container's process.
const podRuntimeEnv = "HOTPLUG_TEST_POD_RUNTIME"

func TestMain(m *testing.M) {
	if path := os.Getenv(podRuntimeEnv); path != "" {
		err := runPod(path)
		fmt.Fprintf(os.Stderr, "pod runtime: %v\n", err)
		os.Exit(127)
	}
	os.Exit(m.Run())
}

// startPod runs pod: the test binary, in new mount, PID, IPC (and, without hostNetwork, network)
// namespaces, sets the container up and executes the agent in it.
func startPod(t *testing.T, pod *podSpec) *process {
	t.Helper()
	b, err := json.Marshal(pod.Runtime)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "runtime.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{podRuntimeEnv + "=" + path}
	flags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC)
	if pod.Runtime.NewNet {
		flags |= syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL}
	return startCmd(t, "pod", cmd)
}

// runPod is the container runtime, in the child startPod started: it mounts the container's file
// systems, makes them its root, drops what the spec does not grant, and executes the entrypoint.
// It returns only on failure.
func runPod(specPath string) error {
	b, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var s runtimeSpec
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	// Capabilities, no_new_privs and credentials belong to a thread: the one that executes.
	runtime.LockOSThread()
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount(s.Root, s.Root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind the root: %w", err)
	}
	for _, m := range s.Mounts {
		if err := mount(s.Root, m); err != nil {
			return err
		}
	}
	// pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the new.
	if err := unix.Chdir(s.Root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if s.ReadOnlyRoot {
		if err := remountReadOnly("/"); err != nil {
			return err
		}
	}
	if err := unix.Chdir(s.Dir); err != nil {
		return fmt.Errorf("working directory %s: %w", s.Dir, err)
	}

	keep := map[int]bool{}
	for _, c := range s.Caps {
		keep[c] = true
	}
	last, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return err
	}
	lastCap, err := strconv.Atoi(strings.TrimSpace(string(last)))
	if err != nil {
		return err
	}
	for c := 0; c <= lastCap; c++ {
		if !keep[c] {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
			}
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if s.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	// This thread only (the raw system calls, not Go's all-threads Setuid): it is the one
	// that executes the entrypoint.
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(s.GID), uintptr(s.GID), uintptr(s.GID)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", s.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(s.UID), uintptr(s.UID), uintptr(s.UID)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", s.UID, e)
	}
	// What is left of the permitted and effective sets is what the spec grants; none inheritable.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for i := range data {
		var mask uint32
		for c := range keep {
			if c/32 == i {
				mask |= 1 << (c % 32)
			}
		}
		data[i].Permitted &= mask
		data[i].Effective &= mask
		data[i].Inheritable = 0
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	argv0 := s.Argv[0]
	if !strings.Contains(argv0, "/") {
		return fmt.Errorf("entrypoint %q: give its path", argv0)
	}
	return fmt.Errorf("exec %s: %w", argv0, unix.Exec(argv0, s.Argv, s.Env))
}

// mount mounts m under root, making its mount point first as a runtime does.
func mount(root string, m mountSpec) error {
	target := filepath.Join(root, m.Target)
	fi, err := os.Stat(m.Source)
	if m.Type == "bind" && err == nil && !fi.IsDir() {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	} else if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	const secure = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	switch m.Type {
	case "proc":
		err = unix.Mount("proc", target, "proc", secure, "")
	case "sysfs":
		err = unix.Mount("sysfs", target, "sysfs", secure|unix.MS_RDONLY, "")
	case "tmpfs":
		flags := uintptr(unix.MS_NOSUID | unix.MS_STRICTATIME)
		if m.Volume { // an emptyDir; the container's /dev holds devices
			flags |= unix.MS_NODEV
		}
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		err = unix.Mount("tmpfs", target, "tmpfs", flags, m.Data)
	case "bind":
		// Kubernetes binds volumes recursively; readOnly applies to the volume's own mount.
		if err = unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err == nil && m.ReadOnly {
			err = remountReadOnly(target)
		}
		if err == nil && m.Recursive {
			// As runc does for recursiveReadOnly (Linux 5.12 and later).
			err = unix.MountSetattr(-1, target, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		}
	default:
		err = errors.New("unknown type")
	}
	if err != nil {
		return fmt.Errorf("mount %s %s on %s: %w", m.Type, m.Source, m.Target, err)
	}
	return nil
}

// remountReadOnly makes the bind mount at target read-only, keeping the flags it has.
func remountReadOnly(target string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return err
	}
	keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME)
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|keep, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

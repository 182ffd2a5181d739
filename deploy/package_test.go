//go:build linux

package deploy

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// builtPackages is what one `make package` made, in a temporary directory.
type builtPackages struct {
	deb, rpm string
	bin      string          // the binary packaged
	prints   map[string]bool // the optional flags the binary answers (--help-man ...)
}

// makePackage runs `make package` with its binary and packages in a temporary directory.
func makePackage(t *testing.T, version string) builtPackages {
	t.Helper()
	testenv.Tool(t, "make", "Debian package make")
	dir := t.TempDir()
	p := builtPackages{bin: filepath.Join(dir, "build", "hotplug-agent"), prints: map[string]bool{}}
	args := []string{"-C", "..", "package", "BIN=" + p.bin, "PKGDIR=" + dir}
	if version != "" {
		args = append(args, "VERSION="+version)
	}
	start := time.Now()
	out, err := exec.Command("make", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	t.Logf("make package: %.1f s\n%s", time.Since(start).Seconds(), out)
	for _, pattern := range []struct {
		glob string
		p    *string
	}{{"hotplug-agent_*.deb", &p.deb}, {"hotplug-agent-*.rpm", &p.rpm}} {
		m, _ := filepath.Glob(filepath.Join(dir, pattern.glob))
		if len(m) != 1 {
			t.Fatalf("make package: want one %s, made %q", pattern.glob, m)
		}
		*pattern.p = m[0]
	}
	for _, flag := range []string{"--help-man", "--completion-script-bash", "--completion-script-zsh"} {
		p.prints[flag] = exec.Command(p.bin, flag).Run() == nil
	}
	return p
}

// TestMakePackage checks the .deb as an administrator would before installing it (its control
// fields, conffiles and files, lintian), installs, upgrades, removes and purges it with dpkg in
// a directory standing for the root, and checks the .rpm's files and scriptlets.
func TestMakePackage(t *testing.T) {
	dpkgDeb := testenv.Tool(t, "dpkg-deb", "Debian package dpkg")
	p := makePackage(t, "")
	// deb runs dpkg-deb op on the .deb: dpkg-deb -f deb Version.
	deb := func(op string, args ...string) string {
		t.Helper()
		out, err := exec.Command(dpkgDeb, append([]string{op, p.deb}, args...)...).Output()
		if err != nil {
			t.Fatalf("dpkg-deb %s %s: %v", op, strings.Join(args, " "), err)
		}
		return string(out)
	}
	version := strings.TrimSpace(deb("-f", "Version"))

	t.Run("control", func(t *testing.T) {
		arch, _ := exec.Command("dpkg", "--print-architecture").Output()
		got := map[string]string{}
		for _, f := range []string{"Package", "Architecture", "Depends", "Pre-Depends", "Section", "Maintainer"} {
			got[f] = strings.TrimSpace(deb("-f", f))
		}
		got["Maintainer"] = map[bool]string{true: "set"}[got["Maintainer"] != ""]
		want := map[string]string{
			"Package": "hotplug-agent", "Architecture": strings.TrimSpace(string(arch)),
			"Depends": "", "Pre-Depends": "", // a static binary; deb-systemd-helper is Essential
			"Section": "admin", "Maintainer": "set",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("control fields (-want +got):\n%s", diff)
		}
		// The version names the commit the binary says it is built from.
		v, _ := exec.Command(p.bin, "version").Output()
		commit := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(string(v)), "hotplug-agent "), "v")
		commit, _, _ = strings.Cut(commit, "-")
		if commit == "" || !strings.Contains(version, commit) {
			t.Errorf("package version %q does not name the binary's %q", version, v)
		}
		if got := deb("-I", "conffiles"); got != "/etc/hotplug-agent/config.yaml\n" {
			t.Errorf("conffiles = %q, want the configuration alone", got)
		}
	})

	t.Run("files", func(t *testing.T) {
		want := map[string]string{
			"usr/bin/hotplug-agent":                           "-rwxr-xr-x root/root",
			"usr/lib/systemd/system/hotplug-agent.service":    "-rw-r--r-- root/root",
			"etc/hotplug-agent/config.yaml":                   "-rw-r--r-- root/root",
			"usr/share/doc/hotplug-agent/README.md":           "-rw-r--r-- root/root",
			"usr/share/doc/hotplug-agent/config.example.yaml": "-rw-r--r-- root/root",
			"usr/share/doc/hotplug-agent/copyright":           "-rw-r--r-- root/root",
			"usr/share/doc/hotplug-agent/changelog.gz":        "-rw-r--r-- root/root",
			"usr/share/lintian/overrides/hotplug-agent":       "-rw-r--r-- root/root",
		}
		for flag, path := range map[string]string{
			"--help-man":               "usr/share/man/man1/hotplug-agent.1.gz",
			"--completion-script-bash": "usr/share/bash-completion/completions/hotplug-agent",
			"--completion-script-zsh":  "usr/share/zsh/vendor-completions/_hotplug-agent",
		} {
			if p.prints[flag] {
				want[path] = "-rw-r--r-- root/root"
			}
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(deb("-c")), "\n") {
			// drwxr-xr-x root/root         0 2026-12-05 14:22 ./usr/
			f := strings.Fields(line)
			if len(f) != 6 {
				t.Fatalf("dpkg-deb -c: %q", line)
			}
			path := strings.TrimPrefix(f[5], "./")
			if strings.HasSuffix(path, "/") {
				if f[0] != "drwxr-xr-x" || f[1] != "root/root" {
					t.Errorf("directory %s: %s %s, want drwxr-xr-x root/root", path, f[0], f[1])
				}
				continue
			}
			got[path] = f[0] + " " + f[1]
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("files of the .deb (-want +got):\n%s", diff)
		}
	})

	root := t.TempDir()
	if out, err := exec.Command(dpkgDeb, "-x", p.deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	t.Run("contents", func(t *testing.T) {
		unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/hotplug-agent.service"))
		if !bytes.Contains(unit, []byte("\nExecStart=/usr/bin/hotplug-agent run --config.file=/etc/hotplug-agent/config.yaml\n")) {
			t.Errorf("the unit does not start /usr/bin/hotplug-agent with /etc/hotplug-agent/config.yaml:\n%s", unit)
		}
		if bytes.Contains(unit, []byte("/usr/local")) {
			t.Errorf("the unit still names /usr/local:\n%s", unit)
		}
		bin := filepath.Join(root, "usr/bin/hotplug-agent")
		if f, err := elf.Open(bin); err != nil {
			t.Errorf("packaged binary: %v", err)
		} else {
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("the packaged binary is dynamically linked")
				}
			}
			f.Close()
		}
		if v, err := exec.Command(bin, "version").Output(); err != nil || !strings.HasPrefix(string(v), "hotplug-agent ") {
			t.Errorf("packaged binary: version: %v %q", err, v)
		}
		example, _ := os.ReadFile("config.example.yaml")
		if cfg, _ := os.ReadFile(filepath.Join(root, "etc/hotplug-agent/config.yaml")); !bytes.Equal(cfg, example) {
			t.Errorf("/etc/hotplug-agent/config.yaml is not deploy/config.example.yaml")
		}
		if c, _ := os.ReadFile(filepath.Join(root, "usr/share/doc/hotplug-agent/copyright")); !bytes.HasPrefix(c, []byte("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")) ||
			!bytes.Contains(c, []byte("\nLicense: Apache-2.0\n")) {
			t.Errorf("copyright is not a machine-readable Apache-2.0 copyright file:\n%s", c)
		}
		first := firstLineGzip(t, filepath.Join(root, "usr/share/doc/hotplug-agent/changelog.gz"))
		if want := "hotplug-agent (" + version + ") "; !strings.HasPrefix(first, want) {
			t.Errorf("changelog starts %q, want %q", first, want)
		}
	})

	t.Run("lintian", func(t *testing.T) {
		lintian := testenv.Tool(t, "lintian", "Debian package lintian; make deps installs it")
		start := time.Now()
		cmd := exec.Command(lintian, "--display-info", p.deb)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		err := cmd.Run()
		t.Logf("lintian (%.1f s):\n%s", time.Since(start).Seconds(), &stdout)
		var errs []string
		for _, line := range strings.Split(stdout.String(), "\n") {
			if strings.HasPrefix(line, "E: ") {
				errs = append(errs, line)
			}
		}
		if len(errs) > 0 || err != nil {
			t.Errorf("lintian: %v\n%s", err, strings.Join(errs, "\n"))
		}
	})

	t.Run("dpkg", func(t *testing.T) { dpkgLifecycle(t, p) })

	t.Run("rpm", func(t *testing.T) {
		rpm := testenv.Tool(t, "rpm", "Debian package rpm; make deps installs it")
		query := func(args ...string) string {
			t.Helper()
			out, err := exec.Command(rpm, append(append([]string{"-qp"}, args...), p.rpm)...).Output()
			if err != nil {
				t.Fatalf("rpm -qp %s: %v", strings.Join(args, " "), err)
			}
			return string(out)
		}
		want := map[string]string{
			"/usr/bin/hotplug-agent":                           "-rwxr-xr-x root:root",
			"/usr/lib/systemd/system/hotplug-agent.service":    "-rw-r--r-- root:root",
			"/etc/hotplug-agent":                               "drwxr-xr-x root:root",
			"/etc/hotplug-agent/config.yaml":                   "-rw-r--r-- root:root config(noreplace)",
			"/usr/share/doc/hotplug-agent":                     "drwxr-xr-x root:root",
			"/usr/share/doc/hotplug-agent/README.md":           "-rw-r--r-- root:root",
			"/usr/share/doc/hotplug-agent/config.example.yaml": "-rw-r--r-- root:root",
			"/usr/share/licenses/hotplug-agent":                "drwxr-xr-x root:root",
			"/usr/share/licenses/hotplug-agent/LICENSE":        "-rw-r--r-- root:root license",
		}
		for flag, path := range map[string]string{
			"--help-man":               "/usr/share/man/man1/hotplug-agent.1.gz",
			"--completion-script-bash": "/usr/share/bash-completion/completions/hotplug-agent",
			"--completion-script-zsh":  "/usr/share/zsh/site-functions/_hotplug-agent",
		} {
			if p.prints[flag] {
				want[path] = "-rw-r--r-- root:root"
			}
		}
		got := map[string]string{}
		digests := map[string]string{}
		flagNames := map[string]string{"cn": " config(noreplace)", "l": " license", "": ""}
		for _, line := range strings.Split(strings.TrimSpace(query("--qf", `[%{FILENAMES}|%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME}|%{FILEFLAGS:fflags}|%{FILEDIGESTS}\n]`)), "\n") {
			f := strings.Split(line, "|")
			if len(f) != 4 {
				t.Fatalf("rpm -qp: %q", line)
			}
			name, ok := flagNames[f[2]]
			if !ok {
				name = " flags " + f[2]
			}
			got[f[0]] = f[1] + name
			digests[f[0]] = f[3]
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("files of the .rpm (-want +got):\n%s", diff)
		}
		// The unit and the binary are the ones checked in the .deb.
		for _, path := range []string{"/usr/lib/systemd/system/hotplug-agent.service", "/usr/bin/hotplug-agent"} {
			b, _ := os.ReadFile(filepath.Join(root, path))
			if sum := sha256.Sum256(b); digests[path] != hex.EncodeToString(sum[:]) {
				t.Errorf("%s differs between the .rpm and the .deb", path)
			}
		}
		scripts := query("--scripts")
		for _, want := range []string{
			"systemctl --no-reload preset hotplug-agent.service",        // %post on installation: the presets decide
			"systemctl --no-reload disable --now hotplug-agent.service", // %preun on erasure
			"systemctl try-restart hotplug-agent.service",               // %postun after an upgrade
			"systemctl daemon-reload",
		} {
			if !strings.Contains(scripts, want) {
				t.Errorf("the .rpm's scriptlets do not run %q:\n%s", want, scripts)
			}
		}
	})
}

// dpkgLifecycle installs the .deb with dpkg into a directory standing for the root (dpkg --root,
// the maintainer scripts run with DPKG_ROOT set, as for a system being built; they then start
// nothing on this machine), upgrades it over an edited configuration, removes and purges it.
func dpkgLifecycle(t *testing.T, p builtPackages) {
	dpkg := testenv.Tool(t, "dpkg", "Debian package dpkg")
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root: dpkg installs the package's files as root")
	}
	helper := testenv.Tool(t, "deb-systemd-helper", "Debian package init-system-helpers")
	if b, _ := os.ReadFile(helper); !bytes.Contains(b, []byte("DPKG_ROOT")) {
		testenv.Unavailable(t, "this deb-systemd-helper ignores DPKG_ROOT: it would enable the unit on this machine")
	}
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(dpkg, append([]string{"--root=" + root, "--force-script-chrootless"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	path := func(p string) string { return filepath.Join(root, p) }
	exists := func(p string) bool { _, err := os.Lstat(path(p)); return err == nil }
	const (
		cfg    = "etc/hotplug-agent/config.yaml"
		state  = "var/lib/hotplug-agent/state.json"
		wants  = "etc/systemd/system/multi-user.target.wants/hotplug-agent.service"
		binary = "usr/bin/hotplug-agent"
	)

	run("--install", p.deb)
	if target, err := os.Readlink(path(wants)); err != nil || target != "/usr/lib/systemd/system/hotplug-agent.service" {
		t.Errorf("installed: the service is not enabled: %s -> %q, %v", wants, target, err)
	}
	for _, f := range []string{binary, cfg, "usr/lib/systemd/system/hotplug-agent.service"} {
		if !exists(f) {
			t.Errorf("installed: no /%s", f)
		}
	}

	// The operator edits the configuration, and the agent has run: an upgrade keeps both.
	edited := []byte("log_notifications: false\n")
	os.WriteFile(path(cfg), edited, 0o644)
	os.MkdirAll(filepath.Dir(path(state)), 0o755)
	os.WriteFile(path(state), []byte("{}\n"), 0o600)
	next := makePackage(t, "v999.0.0")
	run("--install", next.deb)
	if b, _ := os.ReadFile(path(cfg)); !bytes.Equal(b, edited) {
		t.Errorf("upgraded: the edited configuration was replaced: %q", b)
	}
	if st, err := exec.Command(dpkg, "--root="+root, "-s", "hotplug-agent").Output(); err != nil || !bytes.Contains(st, []byte("\nVersion: 999.0.0\n")) {
		t.Errorf("upgraded: dpkg -s: %v\n%s", err, st)
	}

	// Removal keeps the configuration and the state; purge removes every file of the package.
	run("--remove", "hotplug-agent")
	if exists(binary) {
		t.Errorf("removed: /%s is still there", binary)
	}
	for _, f := range []string{cfg, state} {
		if !exists(f) {
			t.Errorf("removed: /%s is gone; only purge removes it", f)
		}
	}
	run("--purge", "hotplug-agent")
	var left []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		switch {
		case err != nil:
			return err
		case rel == "var/lib/dpkg":
			return filepath.SkipDir
		case !d.IsDir() || strings.Contains(rel, "hotplug-agent"):
			left = append(left, rel)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("purged: left behind: %q", left)
	}
}

func firstLineGzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, _ := io.ReadAll(zr)
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

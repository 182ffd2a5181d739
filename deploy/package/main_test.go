package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

func TestParseVersion(t *testing.T) {
	commits := func() (int, error) { return 110, nil }
	for _, tc := range []struct {
		describe, want string
	}{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-4-gabcdef0", "1.2.3+git4.gabcdef0"},
		{"v1.2.3-4-gabcdef0-dirty", "1.2.3+git4.gabcdef0.dirty"},
		{"v1.2.3-rc.1", "1.2.3~rc.1"},
		{"v1.2.3-rc-1", "1.2.3~rc.1"},
		{"v1.2.3-rc.1-2-gabcdef0", "1.2.3~rc.1+git2.gabcdef0"},
		{"abcdef0", "0.0.0+git110.gabcdef0"},
		{"abcdef0-dirty", "0.0.0+git110.gabcdef0.dirty"},
	} {
		got, err := parseVersion(tc.describe, commits)
		if err != nil || got.String() != tc.want {
			t.Errorf("parseVersion(%q) = %q, %v; want %q", tc.describe, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "dev", "v1.2", "release-1", "v1.2.3 rc"} {
		if got, err := parseVersion(bad, commits); err == nil {
			t.Errorf("parseVersion(%q) = %q, want an error", bad, got)
		}
	}
	if _, err := parseVersion("abcdef0", func() (int, error) { return 0, errors.New("not a git repository") }); err == nil {
		t.Errorf("parseVersion of a commit whose count is unknown: no error")
	}
}

// FuzzParseVersion: whatever git describe or VERSION= says, a version made of it is one that dpkg
// and rpm both take as a version without a revision or release: a digit first, then letters,
// digits and . + ~ only (no hyphen, no colon, no space).
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"v1.2.3", "v1.2.3-rc.1-2-gabcdef0-dirty", "abcdef0", "1.2.3-", "v1.2.3--4-gabcd", "v1.2.3-rc:1"} {
		f.Add(s)
	}
	valid := regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	f.Fuzz(func(t *testing.T, describe string) {
		v, err := parseVersion(describe, func() (int, error) { return 7, nil })
		if err == nil && !valid.MatchString(v.String()) {
			t.Errorf("parseVersion(%q) = %q, not a version dpkg and rpm take", describe, v)
		}
	})
}

// TestVersionsSortAsCommits checks with dpkg and rpm themselves that a later commit's package is
// an upgrade of an earlier one's: what apt and dnf decide on.
func TestVersionsSortAsCommits(t *testing.T) {
	order := []struct {
		describe string
		commits  int
	}{
		{"abcdef0", 110}, // no tag yet
		{"0123456", 111},
		{"v0.1.0-rc.1", 0},
		{"v0.1.0-rc.1-2-gabcdef0", 0},
		{"v0.1.0", 0},
		{"v0.1.0-3-g0123456", 0},
		{"v0.1.0-12-gabcdef0", 0},
		{"v0.2.0", 0},
	}
	var versions []string
	for _, o := range order {
		v, err := parseVersion(o.describe, func() (int, error) { return o.commits, nil })
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v.String())
	}
	t.Run("dpkg", func(t *testing.T) {
		dpkg := testenv.Tool(t, "dpkg", "Debian package dpkg")
		for i := 1; i < len(versions); i++ {
			if err := exec.Command(dpkg, "--compare-versions", versions[i-1], "lt", versions[i]).Run(); err != nil {
				t.Errorf("dpkg: %s is not older than %s: %v", versions[i-1], versions[i], err)
			}
		}
	})
	t.Run("rpm", func(t *testing.T) {
		rpm := testenv.Tool(t, "rpm", "Debian package rpm; make deps installs it")
		for i := 1; i < len(versions); i++ {
			out, err := exec.Command(rpm, "--eval", `%{lua: print(rpm.vercmp("`+versions[i-1]+`", "`+versions[i]+`"))}`).Output()
			if err != nil || strings.TrimSpace(string(out)) != "-1" {
				t.Errorf("rpm: %s is not older than %s: %v %q", versions[i-1], versions[i], err, out)
			}
		}
	})
}

// fakeAgent builds testdata/kingpinlike, a binary that prints a man page and completions as
// kingpin does, into dir.
func fakeAgent(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "hotplug-agent")
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, "./testdata/kingpinlike")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the fake agent: %v\n%s", err, out)
	}
	return bin
}

// debFiles extracts the .deb in dir and returns where.
func debFiles(t *testing.T, dir string) string {
	t.Helper()
	dpkgDeb := testenv.Tool(t, "dpkg-deb", "Debian package dpkg")
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one .deb in %s, found %q", dir, debs)
	}
	root := t.TempDir()
	if out, err := exec.Command(dpkgDeb, "-x", debs[0], root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	return root
}

func rpmFiles(t *testing.T, dir string) []string {
	t.Helper()
	rpm := testenv.Tool(t, "rpm", "Debian package rpm; make deps installs it")
	rpms, _ := filepath.Glob(filepath.Join(dir, "*.rpm"))
	if len(rpms) != 1 {
		t.Fatalf("want one .rpm in %s, found %q", dir, rpms)
	}
	out, err := exec.Command(rpm, "-qpl", rpms[0]).Output()
	if err != nil {
		t.Fatalf("rpm -qpl: %v", err)
	}
	return strings.Fields(string(out))
}

// TestManPageAndCompletions packages a binary that prints a man page and shell completions:
// both packages carry them where man, bash-completion and zsh look for them.
func TestManPageAndCompletions(t *testing.T) {
	bin := fakeAgent(t, t.TempDir())
	out := t.TempDir()
	t.Chdir("../..")
	var msgs bytes.Buffer
	if err := build(options{config: "deploy/package/nfpm.yaml", bin: bin, version: "v1.2.3", out: out, formats: []string{"deb", "rpm"}}, &msgs); err != nil {
		t.Fatalf("build: %v\n%s", err, &msgs)
	}
	if strings.Contains(msgs.String(), "have no") {
		t.Errorf("the packager says something is missing:\n%s", &msgs)
	}

	root := debFiles(t, out)
	man, err := os.Open(filepath.Join(root, "usr/share/man/man1/hotplug-agent.1.gz"))
	if err != nil {
		t.Fatalf("the .deb has no man page: %v", err)
	}
	defer man.Close()
	zr, err := gzip.NewReader(man)
	if err != nil {
		t.Fatalf("man page: %v", err)
	}
	if page, _ := io.ReadAll(zr); !bytes.HasPrefix(page, []byte(".TH hotplug-agent 1")) {
		t.Errorf("man page = %q, want the binary's", page)
	}
	for path, first := range map[string]string{
		"usr/share/bash-completion/completions/hotplug-agent": "_hotplug-agent_bash_autocomplete() { :; }",
		"usr/share/zsh/vendor-completions/_hotplug-agent":     "#compdef hotplug-agent", // compinit reads only the first line
	} {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Errorf("the .deb has no %s: %v", path, err)
			continue
		}
		if got, _, _ := strings.Cut(string(b), "\n"); got != first {
			t.Errorf("%s: first line %q, want %q", path, got, first)
		}
		if st, _ := os.Stat(filepath.Join(root, path)); st.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", path, st.Mode().Perm())
		}
	}

	got := rpmFiles(t, out)
	for _, want := range []string{
		"/usr/share/man/man1/hotplug-agent.1.gz",
		"/usr/share/bash-completion/completions/hotplug-agent",
		"/usr/share/zsh/site-functions/_hotplug-agent",
	} {
		if !strings.Contains(strings.Join(got, "\n")+"\n", want+"\n") {
			t.Errorf("the .rpm has no %s:\n%s", want, strings.Join(got, "\n"))
		}
	}
}

// TestWithoutManPage packages a binary that knows none of kingpin's flags: the packages are made
// without a man page and completions, and the packager says why.
func TestWithoutManPage(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "hotplug-agent")
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, "./testdata/nothing")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out := t.TempDir()
	t.Chdir("../..")
	var msgs bytes.Buffer
	if err := build(options{config: "deploy/package/nfpm.yaml", bin: bin, version: "v1.2.3", out: out, formats: []string{"deb"}}, &msgs); err != nil {
		t.Fatalf("build: %v\n%s", err, &msgs)
	}
	want := "package: the packages have no man page, bash completion or zsh completion: " + bin + " --help-man: exit status 2: unknown command\n"
	if diff := cmp.Diff(want, strings.SplitAfter(msgs.String(), "\n")[0]); diff != "" {
		t.Errorf("message (-want +got):\n%s", diff)
	}
	root := debFiles(t, out)
	for _, path := range []string{"usr/share/man", "usr/share/bash-completion", "usr/share/zsh"} {
		if _, err := os.Stat(filepath.Join(root, path)); err == nil {
			t.Errorf("the .deb has %s", path)
		}
	}
}

// TestRefusesDynamicBinary: the packages declare no dependency on a C library, so a binary that
// needs one is refused.
func TestRefusesDynamicBinary(t *testing.T) {
	err := build(options{config: "nfpm.yaml", bin: "/bin/true", version: "v1.2.3", out: t.TempDir(), formats: []string{"deb"}}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("build of /bin/true: %v, want it refused as dynamically linked", err)
	}
}

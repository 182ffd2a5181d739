//go:build linux

package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"

	"github.com/hotplug-agent/hotplug-agent/config"
)

// TestExampleConfigLoads checks that the shipped example is a valid configuration.
func TestExampleConfigLoads(t *testing.T) {
	c, err := config.Load("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Online.Policy(); p.CPU != "online" || p.Memory != "auto" {
		t.Errorf("example policy = %+v; the README says cpu online, memory auto", p)
	}
}

// TestMakeInstall stages `make install` under DESTDIR with another PREFIX: every file lands, the
// unit starts the installed binary, the installed binary runs, and the output says that the
// installed configuration turns the online policy on (the agent's default is off).
func TestMakeInstall(t *testing.T) {
	testenv.Tool(t, "make", "Debian package make")
	dest := t.TempDir()
	cmd := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX=/usr", "UNITDIR=/usr/lib/systemd/system")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	example, err := config.Load("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := example.Online.Policy()
	if p.CPU == "none" && p.Memory == "none" {
		t.Fatalf("config.example.yaml: the online policy is off: this test checks the warning that it is on")
	}
	said := false
	for _, line := range strings.Split(string(out), "\n") {
		said = said || strings.HasPrefix(line, "installed /etc/hotplug-agent/config.yaml") &&
			strings.Contains(line, fmt.Sprintf("turns the online policy on (cpu: %s, memory: %s)", p.CPU, p.Memory)) &&
			strings.Contains(line, "default is none")
	}
	if !said {
		t.Errorf("make install does not say that the configuration it installs turns the online policy on (cpu: %s, memory: %s):\n%s", p.CPU, p.Memory, out)
	}
	for _, f := range []string{
		"usr/bin/hotplug-agent",
		"usr/lib/systemd/system/hotplug-agent.service",
		"etc/hotplug-agent/config.yaml",
		"usr/share/doc/hotplug-agent/README.md",
		"usr/share/doc/hotplug-agent/config.example.yaml",
		"usr/share/man/man1/hotplug-agent.1",
		"usr/share/bash-completion/completions/hotplug-agent",
		"usr/share/zsh/site-functions/_hotplug-agent",
	} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("make install did not install %s: %v", f, err)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/hotplug-agent.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/hotplug-agent run --config.file=/etc/hotplug-agent/config.yaml") {
		t.Errorf("the installed unit does not start /usr/bin/hotplug-agent with the installed config:\n%s", unit)
	}
	if v, err := exec.Command(filepath.Join(dest, "usr/bin/hotplug-agent"), "version").Output(); err != nil || !strings.HasPrefix(string(v), "hotplug-agent ") {
		t.Errorf("installed binary: %v %q", err, v)
	}
	// A second install keeps the configuration the operator edited.
	cfg := filepath.Join(dest, "etc/hotplug-agent/config.yaml")
	os.WriteFile(cfg, []byte("log_notifications: false\n"), 0o644)
	out, err = exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX=/usr").CombinedOutput()
	if err != nil {
		t.Fatalf("second make install: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "log_notifications: false\n" {
		t.Errorf("make install overwrote an existing configuration")
	}
	if !strings.Contains(string(out), "kept the existing /etc/hotplug-agent/config.yaml") || strings.Contains(string(out), "online policy") {
		t.Errorf("a second make install does not say it kept the configuration, or speaks of a policy it did not install:\n%s", out)
	}
}

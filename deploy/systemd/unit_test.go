//go:build linux

// Package systemd holds the agent's systemd unit; its test checks the unit with systemd's own tools.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// tool finds a systemd tool; a missing one ends the test through testenv.Unavailable.
func tool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name, "Debian package systemd; make deps installs it")
}

// unitWithBinary writes a copy of the unit whose ExecStart names a binary that exists, as
// `systemd-analyze verify` checks that it does.
func unitWithBinary(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("hotplug-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hotplug-agent")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/hotplug-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/hotplug-agent", bin)
	p := filepath.Join(dir, "hotplug-agent.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnitVerifies(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	unit := unitWithBinary(t)
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`)

// TestUnitExposure requires an exposure of "OK" or better from `systemd-analyze security`.
func TestUnitExposure(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	unit := unitWithBinary(t)
	out, _ := exec.Command(analyze, "security", "--offline=true", unit).CombinedOutput()
	m := exposureRE.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no exposure level in systemd-analyze security output:\n%s", out)
	}
	if m[2] != "OK" && m[2] != "SAFE" {
		t.Errorf("exposure %s %s; want OK or SAFE:\n%s", m[1], m[2], out)
	}
	t.Logf("exposure level %s %s", m[1], m[2])
}

// TestUnitFlagsExist runs the agent's own flag parser on the ExecStart arguments, so the unit
// never names a flag the binary lacks.
func TestUnitFlagsExist(t *testing.T) {
	unit := unitWithBinary(t)
	b, _ := os.ReadFile(unit)
	var args []string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			args = strings.Fields(rest)
		}
	}
	if len(args) < 2 || args[1] != "run" {
		t.Fatalf("ExecStart %q does not run the agent", args)
	}
	// -h prints the flags of `run`; an unknown flag makes the parse fail with exit code 2.
	cmd := exec.Command(args[0], append(args[1:], "-h")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestUnitOrderedAfterWhatItWants checks that every unit the agent's unit pulls in with Wants= is
// also in its After=: Wants= alone starts both at once, so webhooks sent at boot would race
// network-online.target instead of waiting for the network.
func TestUnitOrderedAfterWhatItWants(t *testing.T) {
	b, err := os.ReadFile("hotplug-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	deps := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if section == "[Unit]" && ok && !strings.HasPrefix(line, "#") {
			deps[key] = append(deps[key], strings.Fields(value)...)
		}
	}
	if len(deps["Wants"]) == 0 {
		t.Fatalf("the unit wants nothing; it should want network-online.target for webhooks at boot")
	}
	for _, want := range deps["Wants"] {
		if !slices.Contains(deps["After"], want) {
			t.Errorf("Wants=%s without After=%s: the agent would start before %s is reached (After=%s)",
				want, want, want, strings.Join(deps["After"], " "))
		}
	}
}

// TestUnitPathsOptionalWhereAbsent checks that the paths of ReadWritePaths= and its kin that a
// kernel may lack are prefixed with "-": systemd fails to start a unit (226/NAMESPACE) when one
// without it does not exist. /sys/devices/system/memory exists only on kernels built with memory
// hotplug (CONFIG_MEMORY_HOTPLUG), and the agent runs without it, following CPUs alone.
func TestUnitPathsOptionalWhereAbsent(t *testing.T) {
	b, err := os.ReadFile("hotplug-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	// The paths every Linux system has.
	always := map[string]bool{"/sys/devices/system/cpu": true}
	for _, line := range strings.Split(string(b), "\n") {
		key, value, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		switch key {
		case "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths":
		default:
			continue
		}
		for _, p := range strings.Fields(value) {
			if !strings.HasPrefix(p, "-") && !always[p] {
				t.Errorf("%s=%s: a system without %s cannot start the unit; prefix it with -", key, p, p)
			}
		}
	}
}

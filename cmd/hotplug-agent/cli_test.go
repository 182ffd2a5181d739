package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// TestBadInput checks that every mistake a user can make on the command line or in the config
// ends in one clear line on stderr and a non-zero exit, before anything starts.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("callbacks:\n  - name: x\n    class: disk\n    log: true\n"), 0o600)
	unknownField := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknownField, []byte("callbacks:\n  - name: x\n    class: memory\n    exek: {}\n"), 0o600)
	notSysfs := t.TempDir()

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
		linux    bool // needs the netlink socket and /sys
	}{
		{"no command", nil, 2, "usage: hotplug-agent", false},
		{"unknown command", []string{"frobnicate"}, 2, `hotplug-agent: unknown command "frobnicate" (see 'hotplug-agent --help')`, false},
		{"help for an unknown command", []string{"help", "frobnicate"}, 2, `"frobnicate"`, false},
		{"unknown flag", []string{"run", "--no-such-flag"}, 2, "hotplug-agent run: unknown long flag '--no-such-flag' (see 'hotplug-agent run --help')", false},
		{"a long flag with one dash", []string{"run", "-log.level=debug"}, 2, "-log.level=debug: long flags take two dashes: --log.level=debug", false},
		{"a switch with a value", []string{"list", "--json=false"}, 2, "--json=false: a switch takes no value: --json or --no-json", false},
		{"a flag given twice", []string{"run", "--log.level=debug", "--log.level=info"}, 2, "flag 'log.level' cannot be repeated", false},
		{"stray argument", []string{"list", "extra"}, 2, `unexpected argument "extra"`, false},
		{"bad log level", []string{"run", "--log.level=loud"}, 2, `--log.level: "loud": want one of debug, info, warn, error`, false},
		{"bad log format", []string{"run", "--log.format=text"}, 2, `--log.format: "text": want logfmt, json or journal`, false},
		{"a fraction for a number", []string{"run", "--web.max-connections=2.9"}, 2, `--web.max-connections: "2.9": want a whole number`, false},
		// --no-retry and a closed port: a value taken for 0 (never give up) ends with exit 1.
		{"a fraction for monitor's retries", []string{"monitor", "--url=http://127.0.0.1:1", "--no-retry", "--retries=0.5"}, 2,
			`hotplug-agent monitor: --retries: "0.5": want a whole number (see 'hotplug-agent monitor --help')`, false},
		{"an exponent for monitor's retries", []string{"monitor", "--url=http://127.0.0.1:1", "--no-retry", "--retries=1e1"}, 2, `--retries: "1e1": want a whole number`, false},
		{"a number too large", []string{"run", "--web.stream-history=99999999999999999999"}, 2, `--web.stream-history: "99999999999999999999": out of range`, false},
		{"not a duration", []string{"run", "--web.idle-timeout=soon"}, 2, `--web.idle-timeout: "soon": want a duration`, false},
		{"empty listen address", []string{"run", "--web.listen-address="}, 2, "--web.listen-address: empty address", false},
		{"no stream subscribers", []string{"run", "--web.max-stream-subscribers=0"}, 2, "--web.max-stream-subscribers: 0: want at least 1", false},
		{"no connections", []string{"run", "--web.max-connections=0"}, 2, "--web.max-connections: 0: want at least 1", false},
		{"no idle time", []string{"run", "--web.idle-timeout=0s"}, 2, "--web.idle-timeout: 0s: want a positive duration", false},
		{"negative buffer", []string{"run", "--netlink.receive-buffer-bytes=-1"}, 2, "is negative", false},
		// With a --path.sysfs that is not one: a size taken ends in exit 1 before anything starts.
		{"buffer beyond 32 bits", []string{"run", "--path.sysfs=" + notSysfs, "--netlink.receive-buffer-bytes=2147483648"}, 2,
			"hotplug-agent run: --netlink.receive-buffer-bytes: 2147483648: want at most 2147483647 (2 GiB less one byte; the kernel takes the size as a 32-bit int) (see 'hotplug-agent run --help')", false},
		{"buffer of 4 GiB and 128 MiB", []string{"run", "--path.sysfs=" + notSysfs, "--netlink.receive-buffer-bytes=4429185024"}, 2,
			"--netlink.receive-buffer-bytes: 4429185024: want at most 2147483647", false},
		{"negative headroom reserve", []string{"run", "--memory.headroom-reserve-bytes=-1"}, 2, "--memory.headroom-reserve-bytes: -1 is negative", false},
		{"negative headroom reserve for list", []string{"list", "--memory.headroom-reserve-bytes=-1"}, 2, "--memory.headroom-reserve-bytes: -1 is negative", false},
		{"missing config", []string{"run", "--config.file=" + filepath.Join(dir, "none.yaml")}, 1, "no such file or directory", false},
		{"invalid class in config", []string{"run", "--config.file=" + badYAML}, 1, "callbacks[0].class", false},
		{"unknown config field", []string{"run", "--config.file=" + unknownField}, 1, ": line 4: unknown key \"exek\" in callbacks[0] (did you mean \"exec\"?)", false},
		{"not a sysfs tree", []string{"run", "--path.sysfs=" + notSysfs}, 1, "is not a sysfs tree", false},
		{"list on a non-sysfs tree", []string{"list", "--path.sysfs=" + notSysfs}, 1, "is not a sysfs tree", false},
		{"memory devices of processors", []string{"monitor", "--memory-devices", "--class=processor"}, 2, "--memory-devices are of class memory", false},
		{"memory devices from the kernel", []string{"monitor", "--memory-devices", "--kernel"}, 2, "not with --kernel", false},
		{"JSON from the kernel", []string{"monitor", "--kernel", "--json"}, 2, "--json: the kernel's uevents are printed as text; not with --kernel", false},
		{"a class from the kernel", []string{"monitor", "--kernel", "--class=processor"}, 2, "--class: the kernel's uevents are not filtered by class; not with --kernel", false},
		{"existing from the kernel", []string{"monitor", "--kernel", "--include-existing"}, 2, "--include-existing: the kernel sends nothing for what is already online; not with --kernel", false},
		{"port in use", []string{"run", "--web.listen-address=" + busy.Addr().String()}, 1, "address already in use", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat("/sys/devices/system/cpu/possible"); tt.linux && err != nil {
				testenv.Unavailable(t, "needs a Linux sysfs at /sys")
			}
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			out := stderr.String()
			if !strings.Contains(out, tt.contains) {
				t.Errorf("stderr %q does not contain %q", out, tt.contains)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q; want nothing", stdout.String())
			}
			if tt.name == "no command" { // the usage, on stderr
				return
			}
			if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; lines != 1 {
				t.Errorf("error is %d lines, want one: %q", lines, out)
			}
			if tt.code == 2 && !strings.Contains(out, "hotplug-agent: error:") && !strings.Contains(out, " --help')") {
				t.Errorf("usage error %q does not say where the help is", out)
			}
		})
	}
}

// TestHelp checks that help goes to stdout and ends in exit 0, for the application and for
// each command, however it is asked for, and that a command's help names its flags.
func TestHelp(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"usage: hotplug-agent", "run", "list", "monitor", "offline", "online", "version"}},
		{[]string{"--help"}, []string{"usage: hotplug-agent"}},
		{[]string{"help"}, []string{"usage: hotplug-agent"}},
		{[]string{"run", "-h"}, []string{"usage: hotplug-agent run", "--web.listen-address=:19100 ...", "--log.format=logfmt", "--path.state=\"/var/lib/hotplug-agent/state.json\""}},
		{[]string{"run", "--config.file=/etc/hotplug-agent/config.yaml", "-h"}, []string{"usage: hotplug-agent run"}},
		{[]string{"help", "run"}, []string{"usage: hotplug-agent run", "--web.idle-timeout=2m"}},
		{[]string{"list", "--help"}, []string{"usage: hotplug-agent list", "--[no-]json"}},
		{[]string{"monitor", "-h"}, []string{"--url=\"http://localhost:19100\""}},
		{[]string{"offline", "-h"}, []string{"usage: hotplug-agent offline [<flags>] [cpu N | memory N | memory-device ID...]", "--timeout=5m"}},
		{[]string{"online", "-h"}, []string{"usage: hotplug-agent online"}},
		{[]string{"--version"}, []string{"hotplug-agent dev"}},
		{[]string{"version"}, []string{"hotplug-agent dev"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
				t.Errorf("exit %d, stderr %q; want 0 and nothing", code, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout does not contain %q:\n%s", w, stdout.String())
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "hotplug-agent ") {
		t.Errorf("version: code %d, stdout %q", code, stdout.String())
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"online":         "online",
		"on\x1b[2Jline":  `"on\x1b[2Jline"`,
		"\xff\xfe":       `"\xff\xfe"`,
		"with space ok~": "with space ok~",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %s; want %s", in, got, want)
		}
	}
}

// TestUserDefaults checks where `hotplug-agent run` keeps its state and its control socket when
// no flag says: the system's paths for root, the user's own state directory for anyone else
// (who may write neither /var/lib nor /run), and no control socket, which needs root.
func TestUserDefaults(t *testing.T) {
	for _, tc := range []struct {
		name          string
		euid          int
		env           map[string]string
		state, socket string
	}{
		{"root", 0, map[string]string{"HOME": "/root", "XDG_STATE_HOME": "/root/st"}, DefaultStatePath, "/run/hotplug-agent/control.sock"},
		{"user", 1000, map[string]string{"HOME": "/home/u"}, "/home/u/.local/state/hotplug-agent/state.json", ""},
		{"user with XDG_STATE_HOME", 1000, map[string]string{"HOME": "/home/u", "XDG_STATE_HOME": "/srv/st"}, "/srv/st/hotplug-agent/state.json", ""},
		{"relative XDG_STATE_HOME is ignored", 1000, map[string]string{"HOME": "/home/u", "XDG_STATE_HOME": "st"}, "/home/u/.local/state/hotplug-agent/state.json", ""},
		{"no home", 65534, map[string]string{"HOME": ""}, "", ""},
		{"relative home", 65534, map[string]string{"HOME": "."}, "", ""},
		{"home that is not there", 65534, map[string]string{"HOME": "/nonexistent"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isDir := func(p string) bool { return p != "/nonexistent" }
			state, socket := userDefaults(tc.euid, func(k string) string { return tc.env[k] }, isDir)
			if state != tc.state || socket != tc.socket {
				t.Errorf("state %q, control socket %q; want %q, %q", state, socket, tc.state, tc.socket)
			}
		})
	}
}

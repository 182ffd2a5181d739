package config

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/online"
)

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(`
log_notifications: false
callbacks:
  - name: grow-pool
    class: memory
    include_existing: true
    exec:
      command: ["/bin/sh", "--x"]
      timeout: 5s
  - name: cpus.log
    class: "{97fadb10-4e33-40ae-359c-8bef029dbdd0}"
    log: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.LogEnabled() {
		t.Error("log_notifications: false did not turn the log callback off")
	}
	if len(c.Callbacks) != 2 {
		t.Fatalf("got %d callbacks, want 2", len(c.Callbacks))
	}
	g := c.Callbacks[0]
	if g.ClassGUID != notify.GUIDDeviceMemory || !g.IncludeExisting || g.Exec == nil ||
		g.Exec.Timeout != 5*time.Second || strings.Join(g.Exec.Command, " ") != "/bin/sh --x" {
		t.Errorf("callbacks[0] = %+v", g)
	}
	if c.Callbacks[1].ClassGUID != notify.GUIDDeviceProcessor || !c.Callbacks[1].Log {
		t.Errorf("callbacks[1] = %+v; want the processor class from its braced GUID", c.Callbacks[1])
	}
}

// TestParseLogName: the name "log" is the built-in log callback's while log_notifications is on,
// and a callback's once it is off.
func TestParseLogName(t *testing.T) {
	c, err := Parse([]byte("log_notifications: false\ncallbacks:\n  - {name: log, class: memory, log: true}\n"))
	if err != nil || len(c.Callbacks) != 1 || c.Callbacks[0].Name != "log" {
		t.Errorf("a callback named log with log_notifications: false: %+v, %v", c, err)
	}
}

func TestOnlinePolicy(t *testing.T) {
	c, err := Parse([]byte("online:\n  cpu: online\n  memory: online_movable\n  retries: 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Online.Policy(); p.CPU != "online" || p.Memory != "online_movable" || p.Retries != 5 {
		t.Errorf("policy = %+v", p)
	}
	c, _ = Parse(nil)
	if p := c.Online.Policy(); p.CPU != "none" || p.Memory != "none" || p.Retries != 3 || p.Enabled() || p.MovableRatio != 301 {
		t.Errorf("default policy = %+v; want none, none, 3 retries, a ratio of 301%%", p)
	}
	for _, tc := range []struct {
		yaml string
		want online.Policy
	}{
		{"online: {memory: planned}", online.Policy{CPU: "none", Memory: "planned", Retries: 3, MovableRatio: 301}},
		{"online: {memory: planned, movable_ratio: 200}", online.Policy{CPU: "none", Memory: "planned", Retries: 3, MovableRatio: 200}},
		{"online: {memory: planned, movable_ratio: 0}", online.Policy{CPU: "none", Memory: "planned", Retries: 3, MovableRatio: 0}},
		{"online: {memory: kernel}", online.Policy{CPU: "none", Memory: "kernel", Retries: 3, MovableRatio: 301}},
		{"online: {memory: kernel, kernel_online: online_movable}", online.Policy{CPU: "none", Memory: "kernel", Retries: 3, MovableRatio: 301, KernelOnline: "online_movable"}},
	} {
		c, err := Parse([]byte(tc.yaml))
		if err != nil {
			t.Errorf("%s: %v", tc.yaml, err)
			continue
		}
		if diff := cmp.Diff(tc.want, c.Online.Policy()); diff != "" {
			t.Errorf("%s: policy (-want +got):\n%s", tc.yaml, diff)
		}
	}
}

func TestParseEmptyIsDefault(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.LogEnabled() || len(c.Callbacks) != 0 {
		t.Errorf("empty config = %+v; want the log callback only", c)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown field", "callbackz: []", `line 1: unknown key "callbackz" (did you mean "callbacks"?)`},
		{"unknown nested field", "callbacks:\n  - name: a\n    class: memory\n    exec: {cmd: [x]}", `line 4: unknown key "cmd" in callbacks[0].exec (did you mean "command"?)`},
		{"no name", "callbacks:\n  - class: memory\n    log: true", "callbacks[0].name: required"},
		{"bad name", "callbacks:\n  - name: 'a b'\n    class: memory\n    log: true", "callbacks[0].name"},
		{"reserved name", "callbacks:\n  - name: log\n    class: memory\n    log: true", `callbacks[0].name: "log" is the built-in log callback's (log_notifications): choose another name, or set log_notifications: false`},
		{"duplicate name", "callbacks:\n  - {name: a, class: memory, log: true}\n  - {name: a, class: memory, log: true}", `callbacks[1].name: "a" is used twice`},
		{"the event stream's name", "callbacks:\n  - {name: events, class: memory, log: true}", `callbacks[0].name: "events" is the event stream's registration: choose another name`},
		{"no class", "callbacks:\n  - name: a\n    log: true", "callbacks[0].class: required"},
		{"bad class", "callbacks:\n  - name: a\n    class: disk\n    log: true", "callbacks[0].class"},
		{"no action", "callbacks:\n  - name: a\n    class: memory", "callbacks[0]: needs an action"},
		{"both actions", "callbacks:\n  - name: a\n    class: memory\n    log: true\n    exec: {command: [x]}", "exclusive"},
		{"webhook and exec", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'http://h'}\n    exec: {command: [x]}", "exclusive"},
		{"webhook without url", "callbacks:\n  - name: a\n    class: memory\n    webhook: {timeout: 1s}", "callbacks[0].webhook.url"},
		{"webhook bad scheme", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'file:///etc/passwd'}", "callbacks[0].webhook.url"},
		{"webhook bad scheme, password hidden", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'ftp://u:s3cret@h/x'}", `callbacks[0].webhook.url: "ftp://u:xxxxx@h/x": want an http:// or https:// URL`},
		{"webhook not a URL, password hidden", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'http://u:s3cret@h:port/x'}", "callbacks[0].webhook.url: not a URL: want an http:// or https:// URL"},
		{"webhook bad retries", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'https://h/x', retries: -1}", "callbacks[0].webhook.retries"},
		{"webhook header value ends in a newline", "callbacks:\n  - name: a\n    class: memory\n    webhook:\n      url: 'https://h/x'\n      headers:\n        Authorization: |\n          Bearer s3cret\n",
			`callbacks[0].webhook.headers: header "Authorization": its value holds a newline at its end (a YAML block scalar "|" keeps it: write "|-" or a plain string), which a header cannot carry`},
		{"webhook header value with a newline inside", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'https://h/x', headers: {X-Token: \"a\\nb\"}}",
			`callbacks[0].webhook.headers: header "X-Token": its value holds a newline, which a header cannot carry`},
		{"webhook header value with a control character", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'https://h/x', headers: {X-Token: \"a\\x01b\"}}",
			`callbacks[0].webhook.headers: header "X-Token": its value holds a control character (0x01), which a header cannot carry`},
		{"webhook header name with a space", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'https://h/x', headers: {'Bad Name': v}}",
			`callbacks[0].webhook.headers: header "Bad Name": not a valid header name: use letters, digits and !#$%&'*+-.^_` + "`|~" + ` only (no spaces, no colon)`},
		{"webhook header name with a colon", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'https://h/x', headers: {'X-Key:': v}}",
			`callbacks[0].webhook.headers: header "X-Key:": not a valid header name`},
		{"webhook header empty name", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'https://h/x', headers: {'': v}}",
			`callbacks[0].webhook.headers: header "": not a valid header name`},
		{"webhook header given twice", "callbacks:\n  - name: a\n    class: memory\n    webhook: {url: 'https://h/x', headers: {Authorization: a, authorization: b}}",
			`callbacks[0].webhook.headers: "Authorization" and "authorization" are the same header (names are case-insensitive): give it once`},
		{"empty command", "callbacks:\n  - name: a\n    class: memory\n    exec: {command: []}", "callbacks[0].exec.command: required"},
		{"shell string", "callbacks:\n  - name: a\n    class: memory\n    exec: {command: 'echo hi'}", `callbacks[0].exec.command: "echo hi" is not a list`},
		{"bad timeout", "callbacks:\n  - name: a\n    class: memory\n    exec: {command: [x], timeout: soon}", "soon"},
		{"negative timeout", "callbacks:\n  - name: a\n    class: memory\n    exec: {command: [x], timeout: -1s}", "callbacks[0].exec.timeout"},
		{"not yaml", "{{{", "did not find"},
		{"bad cpu policy", "online: {cpu: always}", `online.cpu: "always"`},
		{"bad memory policy", "online: {memory: movable}", `online.memory: "movable"`},
		{"bad retries", "online: {retries: -2}", "online.retries: -2"},
		{"retries above the cap", "online: {retries: 100}", "online.retries: 100: want 0 to 10"},
		{"negative ratio", "online: {memory: planned, movable_ratio: -1}", "online.movable_ratio: -1: want a percentage from 0 to 3000 (the kernel's default is 301)"},
		{"ratio beyond the memory map", "online: {memory: planned, movable_ratio: 6300}", "online.movable_ratio: 6300: want a percentage from 0 to 3000"},
		{"ratio as a fraction", "online: {movable_ratio: 3.01}", `line 1: online.movable_ratio: "3.01" is not a whole number of percent (write 301 for 3.01:1)`},
		{"ratio in words", "online: {movable_ratio: [301]}", `line 1: online.movable_ratio: a list is not a whole number of percent`},
		{"bad kernel online type", "online: {memory: kernel, kernel_online: movable}", `online.kernel_online: "movable": want auto-movable, online, online_kernel or online_movable`},
		{"kernel online type without the kernel mode", "online: {memory: planned, kernel_online: online}", "online.kernel_online: only with memory: kernel"},
		{"no exec processes", "max_exec_processes: 0", "max_exec_processes: 0"},
		{"unknown policy field", "online: {disk: online}", `unknown key "disk" in online`},
		{"wrong type", "callbacks: 3", `line 1: callbacks: "3" is not a list`},
		{"cpuset and log", "callbacks:\n  - name: a\n    class: processor\n    log: true\n    cpuset: {cgroups: [x]}", "exclusive"},
		{"cpuset without cgroups", "callbacks:\n  - name: a\n    class: processor\n    cpuset: {add: all}", "callbacks[0].cpuset.cgroups: required"},
		{"cpuset absolute cgroup", "callbacks:\n  - name: a\n    class: processor\n    cpuset: {cgroups: [/sys/fs/cgroup/x]}", `callbacks[0].cpuset.cgroups[0]: "/sys/fs/cgroup/x": want a clean path relative to the cgroup mount`},
		{"cpuset escapes the mount", "callbacks:\n  - name: a\n    class: processor\n    cpuset: {cgroups: [ok, ../x]}", `callbacks[0].cpuset.cgroups[1]: "../x"`},
		{"cpuset bad pattern", "callbacks:\n  - name: a\n    class: processor\n    cpuset: {cgroups: ['a/[']}", `callbacks[0].cpuset.cgroups[0]: "a/[": syntax error in pattern`},
		{"cpuset bad add", "callbacks:\n  - name: a\n    class: processor\n    cpuset: {cgroups: [x], add: some}", `callbacks[0].cpuset.add: "some": want spanning, all or none`},
		{"cpuset relative root", "callbacks:\n  - name: a\n    class: processor\n    cpuset: {cgroups: [x], root: cgroup}", `callbacks[0].cpuset.root: "cgroup"`},
		{"cpuset other class", "callbacks:\n  - name: a\n    class: '{4d36e972-e325-11ce-bfc1-08002be10318}'\n    cpuset: {cgroups: [x]}", "callbacks[0].cpuset: needs class processor (cpuset.cpus) or memory (cpuset.mems)"},
		{"cpuset memory devices", "callbacks:\n  - name: a\n    class: memory\n    memory_devices: true\n    cpuset: {cgroups: [x]}", "callbacks[0].cpuset: only with kind device_interface"},
		{"systemd without units", "callbacks:\n  - name: a\n    class: processor\n    systemd: {add: all}", "callbacks[0].systemd.units: required"},
		{"systemd bad unit", "callbacks:\n  - name: a\n    class: processor\n    systemd: {units: [ok.service, workload.timer]}", `callbacks[0].systemd.units[1]: "workload.timer": want a unit name ending in .service`},
		{"systemd and cpuset", "callbacks:\n  - name: a\n    class: processor\n    systemd: {units: [a.service]}\n    cpuset: {cgroups: [x]}", "exclusive"},
		{"systemd bad add", "callbacks:\n  - name: a\n    class: memory\n    systemd: {units: [a.slice], add: most}", `callbacks[0].systemd.add: "most"`},
		{"cpuset scan interval", "callbacks:\n  - name: a\n    class: memory\n    cpuset: {cgroups: [x], scan_interval: 1ms}", "callbacks[0].cpuset.scan_interval: 1ms: want 10ms to 1h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse(%q) succeeded; want an error containing %q", tt.doc, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows a secret: %q", err)
			}
		})
	}
}

// TestParseWebhookHeaders: the headers a request can carry are accepted as written, a folded
// or stripped block scalar included; those it cannot are refused (see TestParseErrors).
func TestParseWebhookHeaders(t *testing.T) {
	c, err := Parse([]byte(`
callbacks:
  - name: scheduler
    class: processor
    webhook:
      url: https://scheduler.example/hotplug
      headers:
        Authorization: |-
          Bearer abc
        X-Api-Key: "k\tey"
        X-Trace: >-
          a b
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Authorization": "Bearer abc", "X-Api-Key": "k\tey", "X-Trace": "a b"}
	if got := c.Callbacks[0].Webhook.Headers; !maps.Equal(got, want) {
		t.Errorf("headers = %q; want %q", got, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load(missing) = %v; want an error naming the file", err)
	}
	big := filepath.Join(dir, "big.yaml")
	os.WriteFile(big, make([]byte, MaxSize+1), 0o600)
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v; want a size error", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("callbacks:\n  - name: a\n"), 0o600)
	if _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), "config "+bad+": callbacks[0]") {
		t.Errorf("Load(bad) = %v; want an error starting with the file and the field", err)
	}
}

// FuzzParse checks that no document makes the loader panic, and that what it accepts is valid.
func FuzzParse(f *testing.F) {
	f.Add([]byte("callbacks:\n  - name: a\n    class: memory\n    exec: {command: [/bin/true], timeout: 1s}\n"))
	f.Add([]byte("log_notifications: false\n"))
	f.Add([]byte("callbacks: [{name: x, class: '{3fd0f03d-92e0-45fb-b75c-5ed8ffb01021}', log: true}]"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
			return
		}
		for i, cb := range c.Callbacks {
			actions := 0
			for _, set := range []bool{cb.Exec != nil, cb.Webhook != nil, cb.Log} {
				if set {
					actions++
				}
			}
			if cb.Name == "" || actions != 1 || (cb.Exec != nil && len(cb.Exec.Command) == 0) {
				t.Errorf("accepted invalid callbacks[%d] = %+v", i, cb)
			}
		}
	})
}

// TestParseYAMLErrors: the decoder's errors in the terms of the file, exactly: the line, the
// key's path, what is wrong and what to write; no Go type.
func TestParseYAMLErrors(t *testing.T) {
	cb := "callbacks:\n  - name: a\n    class: memory\n"
	tests := []struct{ name, doc, want string }{
		{"misspelt key", "callbaks: []", `line 1: unknown key "callbaks" (did you mean "callbacks"?)`},
		{"misspelt nested key", cb + "    exec:\n      command: [/bin/true]\n      timout: 5s\n",
			`line 6: unknown key "timout" in callbacks[0].exec (did you mean "timeout"?)`},
		{"abbreviated key", cb + "    exec: {cmd: [/bin/true]}", `line 4: unknown key "cmd" in callbacks[0].exec (did you mean "command"?)`},
		{"key far from any", "online: {disk: online}", `line 1: unknown key "disk" in online (the keys here are cpu, kernel_online, memory, movable_ratio, retries)`},
		{"duration without unit", cb + "    exec:\n      command: [/bin/true]\n      timeout: 30\n",
			`line 6: callbacks[0].exec.timeout: "30" is not a duration (write 30s)`},
		{"duration in words", "two_phase: {timeout: ten seconds}", `line 1: two_phase.timeout: "ten seconds" is not a duration (write it like 30s, 1m or 500ms)`},
		{"command as a shell string", cb + "    exec: {command: /usr/bin/logger -t hotplug}",
			`line 4: callbacks[0].exec.command: "/usr/bin/logger -t hotplug" is not a list (write ["/usr/bin/logger", "-t", "hotplug"]: it is never given to a shell)`},
		{"number in words", "online: {retries: three}", `line 1: online.retries: "three" is not a whole number`},
		{"not a boolean", cb + "    log: maybe", `line 4: callbacks[0].log: "maybe" is not true or false`},
		{"list for a string", "callbacks:\n  - name: [a, b]\n    class: memory\n    log: true", `line 2: callbacks[0].name: a list is not a string (quote it: "...")`},
		{"callbacks not a list", "callbacks: 3", `line 1: callbacks: "3" is not a list (items starting with "- ")`},
		{"callback not a mapping", "callbacks: [grow-pool]", `line 1: callbacks[0]: "grow-pool" is not a mapping of class, cpuset, exec, include_existing, kind, log, memory_devices, name, systemd, target, webhook`},
		{"headers not a mapping", cb + "    webhook: {url: 'https://h/x', headers: [a]}", `line 4: callbacks[0].webhook.headers: a list is not a mapping (key: value lines)`},
		{"key twice", "log_notifications: true\nlog_notifications: false", `line 2: key "log_notifications" given twice (first at line 1)`},
		{"several problems", "callbaks: []\nonline: {retries: three}", `line 1: unknown key "callbaks" (did you mean "callbacks"?) (and 1 more problem)`},
		{"syntax", "callbacks: [", "line 1: did not find expected node content"},
		{"second document", "log_notifications: false\n---\ncallbacks: []\n",
			`line 3: the file holds more than one YAML document: the agent reads one (remove the "---" line before this one)`},
		{"empty document first", "---\n---\nlog_notifications: false\n",
			`line 3: the file holds more than one YAML document: the agent reads one (remove the "---" line before this one)`},
		{"second document with a syntax error", "log_notifications: false\n---\n{{{", "line 3: did not find expected node content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || err.Error() != tt.want {
				t.Errorf("Parse(%q) = %v\nwant %s", tt.doc, err, tt.want)
			}
		})
	}
}

// TestParseOneDocument: a document marker at the start or an end marker is one document; a
// trailing "---" starts an empty document, which holds nothing to ignore.
func TestParseOneDocument(t *testing.T) {
	for _, doc := range []string{
		"---\nlog_notifications: false\n",
		"log_notifications: false\n...\n",
		"log_notifications: false\n---\n",
		"log_notifications: false\n---\n# nothing more\n",
	} {
		c, err := Parse([]byte(doc))
		if err != nil || c.LogEnabled() {
			t.Errorf("Parse(%q) = %+v, %v; want the one document", doc, c, err)
		}
	}
}

// TestParseExecCommand: an exec command must be there at start, as the callback will run it: an
// absolute path to an executable file, or a name found in the fixed exec PATH (not the agent's
// own PATH, which the command never sees).
func TestParseExecCommand(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "on-hotplug")
	plain := filepath.Join(dir, "notes.txt")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(plain, []byte("x"), 0o644)
	// Found only through the agent's PATH.
	t.Setenv("PATH", dir)
	doc := func(command string) string {
		return "callbacks:\n  - name: a\n    class: memory\n    exec: {command: [" + command + "]}\n"
	}
	const path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	tests := []struct{ name, command, want string }{
		{"absolute", script, ""},
		{"name in the exec PATH", "sh", ""}, // in /bin or /usr/bin, though not in PATH
		{"missing", filepath.Join(dir, "missing"), "callbacks[0].exec.command: " + dir + "/missing: no such file"},
		{"directory", dir, "callbacks[0].exec.command: " + dir + ": a directory, not an executable file"},
		{"not executable", plain, "callbacks[0].exec.command: " + plain + ": not executable (no execute permission bit: chmod +x)"},
		{"device", "/dev/null", "callbacks[0].exec.command: /dev/null: not a regular file"},
		{"relative", "bin/sh", "callbacks[0].exec.command: bin/sh: a relative path: write it from / (commands run in /)"},
		{"name only in the agent's PATH", "on-hotplug", `callbacks[0].exec.command: "on-hotplug" is in no directory of the exec PATH (` + path + `): write its absolute path`},
		{"name nowhere", "no-such-hook-anywhere", `callbacks[0].exec.command: "no-such-hook-anywhere" is in no directory of the exec PATH (` + path + `): write its absolute path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(doc(tt.command)))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Parse(command %s) = %v; want it accepted", tt.command, err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Errorf("Parse(command %s) = %v\nwant %s", tt.command, err, tt.want)
			}
		})
	}
}

func TestParseCpuset(t *testing.T) {
	c, err := Parse([]byte(`
callbacks:
  - name: workloads
    class: processor
    cpuset:
      cgroups: [".", "docker/*", "machine.slice/*.scope"]
      add: all
  - name: workload-memory
    class: memory
    cpuset: {root: /sys/fs/cgroup/cpuset, cgroups: [docker], scan_interval: 250ms}
  - name: units
    class: processor
    systemd: {units: [workload.service, "batch@1.service", machine.slice]}
`))
	if err != nil {
		t.Fatal(err)
	}
	cpus, mems := c.Callbacks[0].Cpuset, c.Callbacks[1].Cpuset
	if cpus == nil || strings.Join(cpus.Cgroups, " ") != ". docker/* machine.slice/*.scope" || cpus.Add != "all" || cpus.Interval() != DefaultCpusetScanInterval {
		t.Errorf("callbacks[0].cpuset = %+v", cpus)
	}
	if mems == nil || mems.Root != "/sys/fs/cgroup/cpuset" || mems.Interval() != 250*time.Millisecond || c.Callbacks[1].Kind != KindDeviceInterface {
		t.Errorf("callbacks[1] = %+v, cpuset %+v", c.Callbacks[1], mems)
	}
}

// TestREADMECpusetExample parses the configuration of the README's section on cpusets.
func TestREADMECpusetExample(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## Making workloads use new CPUs and memory\n")
	_, block, ok2 := strings.Cut(sec, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README: no yaml block in the section \"Making workloads use new CPUs and memory\"")
	}
	c, err := Parse([]byte(block))
	if err != nil {
		t.Fatalf("README's cpuset example: %v", err)
	}
	if len(c.Callbacks) != 2 || c.Callbacks[0].Cpuset == nil || c.Callbacks[1].Cpuset == nil {
		t.Errorf("README's cpuset example = %+v; want two cpuset callbacks", c.Callbacks)
	}
}

// TestREADMEConfigExamples parses every yaml block of the README as the agent would: a user
// copies them. The exec commands they name (/usr/local/bin/grow-pool, ...) are the user's own, so
// they are replaced by one that is there.
func TestREADMEConfigExamples(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	command := regexp.MustCompile(`"/usr/local/bin/[^"]+"`)
	rest, n := string(b), 0
	for {
		_, after, ok := strings.Cut(rest, "\n```yaml\n")
		if !ok {
			break
		}
		block, tail, ok := strings.Cut(after, "\n```")
		if !ok {
			t.Fatal("README: a yaml block without its end")
		}
		rest, n = tail, n+1
		if _, err := Parse([]byte(command.ReplaceAllString(block, `"/bin/sh"`))); err != nil {
			t.Errorf("README's yaml block %d, which begins %q: %v", n, strings.SplitN(block, "\n", 2)[0], err)
		}
	}
	if n < 5 {
		t.Errorf("README: %d yaml blocks found; want every configuration example", n)
	}
}

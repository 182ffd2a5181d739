//go:build linux

package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// shown returns the commands of the command line and, for each, the long flags its help shows
// (the application's own, -h and --version, under "").
func shown(t *testing.T) (commands []string, flags map[string][]string) {
	t.Helper()
	c := newCLI(io.Discard, io.Discard, func(int) {})
	if _, err := c.app.ParseContext(nil); err != nil { // adds kingpin's help command
		t.Fatal(err)
	}
	m := c.app.Model()
	names := func(fm *kingpin.FlagGroupModel) (out []string) {
		for _, f := range fm.Flags {
			if !f.Hidden {
				out = append(out, f.Name)
			}
		}
		return out
	}
	flags = map[string][]string{"": names(m.FlagGroupModel)}
	for _, cmd := range m.Commands {
		commands = append(commands, cmd.Name)
		flags[cmd.Name] = names(cmd.FlagGroupModel)
	}
	return commands, flags
}

// noRaceExitWait spares each run of the binary, built with -race, the race detector's second of
// waiting at exit.
const noRaceExitWait = "GORACE=atexit_sleep_ms=0"

// runBinary runs the agent's binary with args, which must succeed with nothing on stderr, and
// returns its stdout.
func runBinary(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), noRaceExitWait)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() != 0 {
		t.Fatalf("hotplug-agent %s: %v, stderr %q", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// TestHelpLong checks that --help-long prints every command and every flag, on stdout.
func TestHelpLong(t *testing.T) {
	out := runBinary(t, "--help-long")
	commands, flags := shown(t)
	for _, c := range commands {
		if !strings.Contains(out, "\n"+c) {
			t.Errorf("--help-long does not show the command %s", c)
		}
		for _, f := range flags[c] {
			if !strings.Contains(out, "--"+f) && !strings.Contains(out, "--[no-]"+f) {
				t.Errorf("--help-long does not show --%s of %s", f, c)
			}
		}
	}
}

// TestManPage renders the man page as man(1) does and lints it with groff: it must render
// without a warning, have a NAME line that whatis reads, and name every command and flag.
func TestManPage(t *testing.T) {
	groff := testenv.Tool(t, "groff", "Debian package groff-base")
	man := testenv.Tool(t, "man", "Debian package man-db")
	page := filepath.Join(t.TempDir(), "hotplug-agent.1")
	if err := os.WriteFile(page, []byte(runBinary(t, "--help-man")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", page).CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("groff -ww: %v\n%s", err, out)
	}
	var text string
	for _, width := range []string{"60", "80", "200"} {
		cmd := exec.Command(man, "--warnings", "-l", page)
		cmd.Env = append(os.Environ(), "MANWIDTH="+width, "MAN_KEEP_FORMATTING=", "LC_ALL=C.UTF-8")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() != 0 {
			t.Errorf("man -l at width %s: %v\n%s", width, err, stderr.String())
		}
		text = stdout.String()
	}
	// At width 200, man does not fill lines: each item is on a line of its own.
	if !strings.Contains(text, "hotplug-agent - CPU and memory hotplug as Windows Plug and Play") {
		t.Errorf("no NAME line that whatis can read:\n%s", text)
	}
	commands, flags := shown(t)
	for _, c := range commands {
		if !strings.Contains(text, "hotplug-agent "+c) {
			t.Errorf("the man page does not name the command %s in its synopsis", c)
		}
		for _, f := range flags[c] {
			if !strings.Contains(text, "--"+f) {
				t.Errorf("the man page does not show --%s of %s", f, c)
			}
		}
	}
	for _, section := range []string{"SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES"} {
		if !strings.Contains(text, "\n"+section+"\n") {
			t.Errorf("the man page has no %s section", section)
		}
	}
}

// TestCompletion checks the bash completion script: it parses, and, loaded into bash as
// bash-completion loads it, completes commands, a command's flags and a flag's values. The zsh
// script is checked for what zsh's completion system needs to find it.
func TestCompletion(t *testing.T) {
	bash := testenv.Tool(t, "bash", "Debian package bash")
	script := filepath.Join(t.TempDir(), "hotplug-agent")
	if err := os.WriteFile(script, []byte(runBinary(t, "--completion-script-bash")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	commands, flags := shown(t)
	for _, tt := range []struct {
		words []string // after the command's name; the last is the word being completed
		want  []string
	}{
		{[]string{""}, commands},
		{[]string{"mon"}, []string{"monitor"}},
		{[]string{"run", "--web."}, []string{"--web.config.file", "--web.idle-timeout", "--web.listen-address", "--web.max-connections",
			"--web.max-stream-subscribers", "--web.stream-history", "--web.systemd-socket"}},
		{[]string{"run", "--log.format", ""}, []string{"journal", "json", "logfmt"}},
		{[]string{"run", "--log.level", "w"}, []string{"warn"}},
		{[]string{"monitor", "--class", ""}, []string{"memory", "processor"}},
		{[]string{"offline", ""}, []string{"cpu", "memory", "memory-device"}},
		{[]string{"list", "--"}, prefixed("--", flags["list"], flags[""])},
	} {
		t.Run(strings.Join(tt.words, " "), func(t *testing.T) {
			// COMP_WORDS[0] is the command as typed: here the binary under test.
			words := append([]string{binary}, tt.words...)
			quoted := make([]string, len(words))
			for i, w := range words {
				quoted[i] = "'" + w + "'"
			}
			prog := "source " + script + "\n" +
				"complete -p hotplug-agent >/dev/null || exit 3\n" +
				"COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" + strconv.Itoa(len(words)-1) + "\n" +
				"_hotplug-agent_bash_autocomplete\n" +
				`printf '%s\n' "${COMPREPLY[@]}"`
			cmd := exec.Command(bash, "-c", prog)
			cmd.Env = append(os.Environ(), noRaceExitWait)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			got := strings.Fields(string(out))
			want := slices.Clone(tt.want)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("completions %q; want %q", got, want)
			}
		})
	}

	zsh := runBinary(t, "--completion-script-zsh")
	if !strings.HasPrefix(zsh, "#compdef hotplug-agent\n") || !strings.Contains(zsh, "--completion-bash") {
		t.Errorf("the zsh script does not begin with #compdef hotplug-agent or does not ask the binary:\n%s", zsh)
	}
}

// prefixed returns each of the lists' names with prefix before it.
func prefixed(prefix string, lists ...[]string) (out []string) {
	for _, l := range lists {
		for _, s := range l {
			out = append(out, prefix+s)
		}
	}
	return out
}

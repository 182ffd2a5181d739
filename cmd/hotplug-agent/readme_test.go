//go:build linux

package main

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
)

var (
	// tableTitleRE is the line above a README flag table: "Flags of `run`:", "Flags of
	// `offline` and `online`:".
	tableTitleRE = regexp.MustCompile("^Flags of (`[a-z]+`(?:(?:, | and )`[a-z]+`)*):$")
	backtickRE   = regexp.MustCompile("`([^`]*)`")
)

// readmeFlag is a row of a README flag table.
type readmeFlag struct {
	def  string // the default column: its first `code`, else its text ("none", "false")
	line int
}

// readmeFlagTables returns the README's flag tables: for each command, its flags by name.
func readmeFlagTables(t *testing.T) map[string]map[string]readmeFlag {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	tables := map[string]map[string]readmeFlag{}
	for i := 0; i < len(lines); i++ {
		m := tableTitleRE.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		rows := map[string]readmeFlag{}
		for _, c := range backtickRE.FindAllStringSubmatch(m[1], -1) {
			if tables[c[1]] != nil {
				t.Fatalf("README.md:%d: a second table of %s's flags", i+1, c[1])
			}
			tables[c[1]] = rows
		}
		i++
		for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
			i++
		}
		for ; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			cells := strings.Split(strings.ReplaceAll(lines[i], `\|`, "\x00"), "|")
			if len(cells) < 4 {
				t.Fatalf("README.md:%d: not a flag table's row: %s", i+1, lines[i])
			}
			flag, def := strings.TrimSpace(cells[1]), strings.TrimSpace(cells[2])
			if flag == "flag" || strings.HasPrefix(flag, "---") {
				continue // the header and its rule
			}
			name, ok := strings.CutPrefix(strings.Trim(flag, "`"), "--")
			if !ok {
				t.Fatalf("README.md:%d: %q is not a `--flag`", i+1, flag)
			}
			if m := backtickRE.FindStringSubmatch(def); m != nil {
				def = m[1]
			}
			rows[name] = readmeFlag{def: def, line: i + 1}
		}
	}
	return tables
}

// helpDefault is the default of a flag as the README's tables write it.
func helpDefault(f *kingpin.FlagModel) string {
	switch {
	case f.IsBoolFlag() && len(f.Default) == 0:
		return "false"
	case len(f.Default) == 0 || len(f.Default) == 1 && f.Default[0] == "":
		return "none"
	}
	return strings.Join(f.Default, ", ")
}

// TestREADMEAgreesWithHelp compares the README's flag tables of every command with the flags
// the command line has, as -h and the man page show them: the same flags, with the same
// defaults. (The defaults of --path.state and --control.socket that depend on the user are
// root's in both; the README says the others'.) It also checks that the README's synopsis names
// only flags that exist.
func TestREADMEAgreesWithHelp(t *testing.T) {
	tables := readmeFlagTables(t)
	c := newCLI(io.Discard, io.Discard, func(int) {})
	if _, err := c.app.ParseContext(nil); err != nil { // adds kingpin's help command
		t.Fatal(err)
	}
	commands := map[string]bool{}
	for _, cmd := range c.app.Model().Commands {
		commands[cmd.Name] = true
		flags := map[string]*kingpin.FlagModel{}
		for _, f := range cmd.Flags {
			if !f.Hidden {
				flags[f.Name] = f
			}
		}
		table, ok := tables[cmd.Name]
		if len(flags) > 0 && !ok {
			t.Errorf("%s has flags, and the README has no table of them (a line \"Flags of `%s`:\" above it)", cmd.Name, cmd.Name)
			continue
		}
		for name, f := range flags {
			row, ok := table[name]
			switch {
			case !ok:
				t.Errorf("--%s of %s is in its help (default %q), not in the README's table", name, cmd.Name, helpDefault(f))
			case row.def != helpDefault(f):
				t.Errorf("README.md:%d: --%s of %s defaults to %q; its help says %q", row.line, name, cmd.Name, row.def, helpDefault(f))
			}
		}
		for name, row := range table {
			if flags[name] == nil {
				t.Errorf("README.md:%d: --%s is in the README's table of %s, and %s has no such flag", row.line, name, cmd.Name, cmd.Name)
			}
		}
	}
	for name := range tables {
		if !commands[name] {
			t.Errorf("the README has a table of flags of %s, which is no command", name)
		}
	}

	// The synopsis: lines "hotplug-agent CMD [--flag=...] ..." of the Running it section.
	b, _ := os.ReadFile("../../README.md")
	section := string(b)[strings.Index(string(b), "## Running it"):]
	section = section[:strings.Index(section, "\n```\n")]
	flagRE := regexp.MustCompile(`--([a-z][a-z.-]*)`)
	inSynopsis := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "hotplug-agent" {
			continue
		}
		inSynopsis[fields[1]] = true
		cmd := c.app.GetCommand(fields[1])
		if cmd == nil {
			t.Errorf("README synopsis %q: no command %s", line, fields[1])
			continue
		}
		for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
			if cmd.GetFlag(m[1]) == nil && !slices.Contains([]string{"help", "version"}, m[1]) {
				t.Errorf("README synopsis %q: %s has no flag --%s", line, fields[1], m[1])
			}
		}
	}
	for name := range commands {
		if !inSynopsis[name] {
			t.Errorf("the README's synopsis has no line for %s", name)
		}
	}
}

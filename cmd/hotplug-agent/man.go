package main

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

func init() {
	// kingpin renders `--help-man` with this template; it is kingpin's own with a NAME line
	// that whatis and apropos can read, every command's long help, text escaped for troff,
	// and the sections a man page has beside them.
	kingpin.ManPageTemplate = manPageTemplate
}

// troff escapes s for a man page: a backslash prints as one, a "-" is a minus sign (so that
// flags copied from the page work), a URL may break after a "/", and a line cannot start with
// a control character.
func troff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	words := strings.Split(s, " ")
	for i, w := range words {
		if strings.Contains(w, "://") {
			words[i] = strings.ReplaceAll(w, "/", `/\:`)
		}
	}
	s = strings.Join(words, " ")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// manDate is the date of the man page: SOURCE_DATE_EPOCH's, for a page built reproducibly
// (make man sets it to the last commit's), else today's.
func manDate() string {
	t := time.Now()
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		t = time.Unix(s, 0)
	}
	return t.UTC().Format(time.DateOnly)
}

// repeatable reports whether a flag's value may be given more than once.
func repeatable(v kingpin.Value) bool {
	r, ok := v.(interface{ IsCumulative() bool })
	return ok && r.IsCumulative()
}

const manPageTemplate = `{{define "FormatFlags" -}}
{{range .Flags -}}
{{if not .Hidden -}}
.TP
\fB{{if .Short}}\-{{.Short|Char}}, {{end}}\-\-{{.Name|Troff}}\fR{{if not .IsBoolFlag}}=\fI{{.FormatPlaceHolder|Troff}}\fR{{end}}{{if .Value|Repeatable}} ...{{end}}
{{.Help|Troff}}
{{end -}}
{{end -}}
{{end -}}

{{define "FormatArgs" -}}
{{range .Args}}{{if not .Hidden}} {{if not .Required}}[{{end}}{{if .PlaceHolder}}{{.PlaceHolder|Troff}}{{else}}<{{.Name}}>{{end}}{{if .Value|Repeatable}}...{{end}}{{if not .Required}}]{{end}}{{end}}{{end -}}
{{end -}}

.TH HOTPLUG\-AGENT 1 {{ManDate}} "hotplug\-agent {{Version|Troff}}" "User Commands"
.nh
.ad l
.SH NAME
hotplug\-agent \- CPU and memory hotplug as Windows Plug and Play device interface notifications
.SH SYNOPSIS
.nf
{{range .App.Commands -}}
{{if not .Hidden -}}
\fBhotplug\-agent {{.FullCommand}}\fR{{if .Flags}} [\fIflags\fR]{{end}}{{template "FormatArgs" .}}
{{end -}}
{{end -}}
.fi
.SH DESCRIPTION
{{.App.Help|Troff}}
.PP
Each command's flags follow it; \fB\-h\fR or \fB\-\-help\fR after a command prints them, and
\fB\-\-help\-long\fR prints every command with its flags.
.SH OPTIONS
{{template "FormatFlags" .App -}}
.SH COMMANDS
{{range .App.Commands -}}
{{if not .Hidden -}}
.SS "{{.FullCommand}}"
{{if .HelpLong}}{{.HelpLong|Troff}}{{else}}{{.Help|Troff}}{{end}}
{{template "FormatFlags" . -}}
{{end -}}
{{end -}}
.SH "EXIT STATUS"
.TP
.B 0
Success.
.TP
.B 1
The command failed: one line on standard error says why (for \fBoffline\fR and \fBonline\fR, the
lines of the items that did not succeed).
.TP
.B 2
Bad usage: an unknown command or flag, a value a flag does not take. One line on standard error
names it.
.TP
.B 3
\fBoffline\fR and \fBonline\fR: the request was cancelled (an interrupt) or its \fB\-\-timeout\fR
passed before every item was done; the agent undid the memory device it was working on, and the
lines of the items say what was stopped.
.SH ENVIRONMENT
.TP
.B JOURNAL_STREAM
Set by systemd when standard error is the journal: \fBrun\fR then logs to journald natively,
each notification's details as fields (HOTPLUG_EVENT, HOTPLUG_SYMBOLIC_LINK, ...), unless
\fB\-\-log.format\fR is given.
.TP
.BR XDG_STATE_HOME ", " HOME
Where \fBrun\fR keeps its state file when it does not run as root.
.TP
.B NO_COLOR
When set, \fBlist\fR and \fBmonitor\fR print no colours on a terminal.
.SH FILES
.TP
.I /etc/hotplug\-agent/config.yaml
The configuration the systemd unit passes with \fB\-\-config.file\fR.
.TP
.I /var/lib/hotplug\-agent/state.json
The interfaces announced and the last event ID, kept across restarts (root's \fB\-\-path.state\fR).
.TP
.I /run/hotplug\-agent/control.sock
The control socket of \fBoffline\fR, \fBonline\fR and \fBreload\fR (root's \fB\-\-control.socket\fR).
.SH "SEE ALSO"
.BR journalctl (1),
.BR systemd.service (5),
and the README in /usr/share/doc/hotplug\-agent or /usr/local/share/doc/hotplug\-agent.
`

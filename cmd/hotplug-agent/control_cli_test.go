package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/control"
)

// TestControlBadInput: mistakes on the offline/online command line end in one line on stderr
// and exit 2 before anything is sent; no agent listening is exit 1 with a hint.
func TestControlBadInput(t *testing.T) {
	none := "--control.socket=" + filepath.Join(t.TempDir(), "none.sock")
	for _, tt := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"offline"}, 2, "name what to change: cpu N, memory N or memory-device ID"},
		{[]string{"offline", "cpu"}, 2, "cpu: which one? (cpu N)"},
		{[]string{"online", "cpu", "one"}, 2, "cpu one: want a number"},
		{[]string{"online", "memory", "-1"}, 2, "memory -1: want a number"},
		{[]string{"offline", "cpu", "+1"}, 2, "cpu +1: want a number"},
		{[]string{"offline", "--control.socket=", "cpu", "1"}, 2, "--control.socket: empty"},
		{[]string{"reload", "--control.socket="}, 2, "--control.socket: empty"},
		{[]string{"offline", "disk", "3"}, 2, `"disk": want cpu, memory or memory-device`},
		{[]string{"offline", "cpu", "1", "--json"}, 2, `"--json": flags go before the targets`},
		{[]string{"offline", "--timeout=0s", "cpu", "1"}, 2, "--timeout: 0s"},
		{[]string{"offline", "--no-such-flag", "cpu", "1"}, 2, "unknown long flag '--no-such-flag'"},
		{[]string{"offline", none, "cpu", "1"}, 1, "no agent is listening on"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		out := stderr.String()
		if code != tt.code || !strings.Contains(out, tt.contains) || strings.Count(strings.TrimSpace(out), "\n") != 0 || stdout.Len() != 0 {
			t.Errorf("hotplug-agent %s: exit %d, stderr %q, stdout %q; want exit %d and one line containing %q",
				strings.Join(tt.args, " "), code, out, stdout.String(), tt.code, tt.contains)
		}
	}
}

func TestControlResultLines(t *testing.T) {
	for _, tt := range []struct {
		r    control.Result
		want string
	}{
		{control.Result{Kind: "cpu", ID: "1", Response: control.Success}, "cpu 1: success"},
		{control.Result{Kind: "memory", ID: "0", Response: control.Failed, Error: "write offline: device or resource busy", ErrorCode: 16, ErrorName: "EBUSY"},
			"memory 0: operation-failed: write offline: device or resource busy (EBUSY)"},
		{control.Result{Kind: "cpu", ID: "9", Response: control.NotFound, Error: "cpu 9: no such CPU"}, "cpu 9: not-found: cpu 9: no such CPU"},
	} {
		if got := resultLine(tt.r); got != tt.want {
			t.Errorf("resultLine(%+v) = %q; want %q", tt.r, got, tt.want)
		}
	}
	targets, err := parseTargets([]string{"cpu", "1", "memory", "32", "memory-device", "PNP0C80:00"})
	want := []control.Target{{Kind: "cpu", ID: "1"}, {Kind: "memory", ID: "32"}, {Kind: "memory-device", ID: "PNP0C80:00"}}
	if err != nil || len(targets) != 3 || targets[0] != want[0] || targets[1] != want[1] || targets[2] != want[2] {
		t.Errorf("parseTargets = %v, %v; want %v", targets, err, want)
	}
}

// TestControlAnswerMatchesRequest: `offline` takes the control socket's answer as one result per
// target, in order: an answer that leaves targets out, or answers for others (a peer that is not
// the agent, or a broken one), exits 1 with a line for each target left unanswered, never with a
// success it was not given.
func TestControlAnswerMatchesRequest(t *testing.T) {
	for _, tt := range []struct {
		name, answer, want string
	}{
		{"nothing", `{}`, "cpu 1: no answer from the agent\ncpu 2: no answer from the agent\n"},
		{"one of two", `{"results":[{"kind":"cpu","id":"1","response":"success"}]}`,
			"cpu 1: success\ncpu 2: no answer from the agent\n"},
		{"another target", `{"results":[{"kind":"cpu","id":"7","response":"success"},{"kind":"cpu","id":"2","response":"success"}]}`,
			"cpu 7: an answer for what was not asked\ncpu 2: success\ncpu 1: no answer from the agent\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			socket := filepath.Join(t.TempDir(), "control.sock")
			l, err := net.Listen("unix", socket)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				bufio.NewReader(c).ReadString('\n') // the request
				io.WriteString(c, tt.answer+"\n")
			}()
			var stdout, stderr bytes.Buffer
			code := run([]string{"offline", "--control.socket=" + socket, "cpu", "1", "cpu", "2"}, &stdout, &stderr)
			if code != 1 || stdout.String() != tt.want {
				t.Errorf("exit %d, stdout %q (stderr %q); want exit 1 and %q", code, stdout.String(), stderr.String(), tt.want)
			}
		})
	}
}

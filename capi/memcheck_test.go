//go:build linux

package main

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// A memChecker runs a C program built against libhotplug under a memory-error detector. The C
// example and the misuse program run under every checker that can run on this machine:
// AddressSanitizer (with LeakSanitizer) everywhere, and valgrind's memcheck where valgrind can
// execute the Go runtime on this CPU (Debian's valgrind 3.19 dies with SIGILL at an instruction
// it cannot decode on some AMD EPYC CPUs, in runtime.cputicks). Both report an error with exit
// status 99.
type memChecker struct {
	name string
	// build compiles src against the library the checker needs and returns the program.
	build func(t *testing.T, src, name string) string
	// argv returns the command line that runs prog with args under the checker.
	argv func(t *testing.T, prog string, args ...string) []string
	// env is added to the program's environment.
	env []string
	// invalidRead is text the checker's report of an invalid read contains.
	invalidRead string
}

const memcheckExit = 99

// memCheckers returns the checkers for this machine, asan first. A checker whose tool is missing
// ends t through testenv.Unavailable (CI installs both).
func memCheckers() []memChecker {
	return []memChecker{
		{
			name: "asan",
			build: func(t *testing.T, src, name string) string {
				return compile(t, library(t, ""), src, name+"-asan", "-fsanitize=address", "-fno-omit-frame-pointer")
			},
			argv: func(t *testing.T, prog string, args ...string) []string { return append([]string{prog}, args...) },
			// LeakSanitizer is on by default with ASan on x86_64; say it, and the exit status.
			env:         []string{fmt.Sprintf("ASAN_OPTIONS=exitcode=%d:detect_leaks=1:abort_on_error=0", memcheckExit)},
			invalidRead: "heap-use-after-free",
		},
		{
			name: "valgrind",
			build: func(t *testing.T, src, name string) string {
				requireValgrind(t)
				return compile(t, library(t, "valgrind"), src, name+"-valgrind")
			},
			argv: func(t *testing.T, prog string, args ...string) []string {
				vg := tool(t, "valgrind")
				return append([]string{vg, fmt.Sprintf("--error-exitcode=%d", memcheckExit), "--leak-check=full",
					"--show-leak-kinds=all", "--errors-for-leak-kinds=all",
					"--suppressions=testdata/go-runtime.supp", "-q", prog}, args...)
			},
			invalidRead: "Invalid read",
		},
	}
}

// toolCannotRun reports whether a run under valgrind ended because valgrind cannot execute an
// instruction of the program on this CPU, and the line that says so. The program runs natively
// (the plain subtests run it), so such an end is valgrind's limit, not a memory error of ours:
// valgrind re-raises the SIGILL it met, and says "Illegal opcode" (with -q the "unhandled
// instruction bytes" lines are not printed).
func toolCannotRun(out string, err error) (string, bool) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return "", false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGILL {
		return "", false
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "Illegal opcode") || strings.Contains(l, "unhandled instruction bytes") ||
			strings.Contains(l, "Unrecognised instruction") {
			where := ""
			for _, m := range strings.Split(out, "\n") {
				if strings.Contains(m, " at 0x") {
					where = strings.TrimSpace(m[strings.Index(m, " at 0x"):])
					break
				}
			}
			return strings.TrimSpace(strings.TrimLeft(l, "=0123456789 ")) + " " + where, true
		}
	}
	return "", false
}

var valgrindProbe struct {
	once   sync.Once
	reason string // why valgrind cannot run here; empty when it can
}

// requireValgrind ends t, saying why, when valgrind cannot start the Go runtime of libhotplug on
// this CPU. It probes once, with a C program that only loads the library (its Go runtime starts
// when the library is loaded). A probe that passes does not promise every run will: the
// instruction can be reached late, and the real runs are classified by toolCannotRun too.
// This is neither a pass nor a failure of our code, so it skips even under CI=true; the asan
// subtest checks the same program on every machine.
func requireValgrind(t *testing.T) {
	t.Helper()
	vg := tool(t, "valgrind")
	valgrindProbe.once.Do(func() {
		prog := compile(t, library(t, "valgrind"), "testdata/load.c", "load-valgrind")
		for range 3 {
			out, err := exec.Command(vg, "-q", prog).CombinedOutput()
			if why, ok := toolCannotRun(string(out), err); ok {
				valgrindProbe.reason = why
				return
			}
			if err != nil {
				t.Fatalf("valgrind on a program that only loads libhotplug: %v\n%s", err, out)
			}
		}
	})
	if valgrindProbe.reason != "" {
		skipToolLimit(t, valgrindProbe.reason)
	}
}

// skipToolLimit skips t because valgrind cannot execute this program on this CPU.
func skipToolLimit(t *testing.T, why string) {
	t.Helper()
	t.Skipf("valgrind cannot run the Go runtime on this CPU (%s): not a result about our code; "+
		"the asan subtest checks the same program for memory errors and leaks", why)
}

// run runs cmd (built from a checker's argv) with the checker's environment and returns its
// combined output and error. When valgrind met an instruction it cannot execute, t is skipped.
func (c memChecker) run(t *testing.T, cmd *exec.Cmd) (string, error) {
	t.Helper()
	cmd.Env = append(cmd.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if why, ok := toolCannotRun(string(out), err); ok && c.name == "valgrind" {
		skipToolLimit(t, why)
	}
	return string(out), err
}

// TestToolCannotRun: a valgrind that met an instruction it cannot decode is told apart from a
// memory error, a failing program and a program killed by another signal. The avx512 output is
// valgrind 3.19's own, recorded on an AMD EPYC running an AVX-512 instruction; the cputicks one
// has the form of the report from the CI run valgrind broke (the same two lines, at the Go
// runtime's RDTSCP).
func TestToolCannotRun(t *testing.T) {
	sigill := exitBySignal(t, syscall.SIGILL)
	sigsegv := exitBySignal(t, syscall.SIGSEGV)
	status99 := exitWithStatus(t, 99)
	const cputicks = "==4182== \n==4182== Process terminating with default action of signal 4 (SIGILL)\n" +
		"==4182==  Illegal opcode at address 0x4A5B3E1\n" +
		"==4182==    at 0x4A5B3E1: runtime.cputicks.abi0 (asm_amd64.s:1261)\n"
	const avx512 = "==27795== \n==27795== Process terminating with default action of signal 4 (SIGILL)\n" +
		"==27795==  Illegal opcode at address 0x10912D\n==27795==    at 0x10912D: main (ill.c:1)\n"
	const invalid = "==31== Invalid read of size 8\n==31==    at 0x109263: main (misuse.c:40)\n"
	tests := []struct {
		name string
		out  string
		err  error
		want bool
	}{
		{"cputicks", cputicks, sigill, true},
		{"avx512", avx512, sigill, true},
		{"memory error", invalid, status99, false},
		{"clean", "", nil, false},
		{"segfault", "Process terminating with default action of signal 11 (SIGSEGV)", sigsegv, false},
		{"sigill without valgrind's word", "", sigill, false},
	}
	for _, tt := range tests {
		why, got := toolCannotRun(tt.out, tt.err)
		if got != tt.want {
			t.Errorf("%s: toolCannotRun = %v (%q), want %v", tt.name, got, why, tt.want)
		}
		if got && !strings.Contains(why, "Illegal opcode at address") {
			t.Errorf("%s: reason %q does not quote valgrind", tt.name, why)
		}
	}
	if why, _ := toolCannotRun(cputicks, sigill); !strings.Contains(why, "runtime.cputicks") {
		t.Errorf("reason %q does not say where", why)
	}
}

// exitBySignal returns the error of a real process killed by sig.
func exitBySignal(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	err := exec.Command("/bin/sh", "-c", fmt.Sprintf("kill -%d $$", int(sig))).Run()
	if err == nil {
		t.Fatalf("sh killed by signal %d exited 0", sig)
	}
	return err
}

// exitWithStatus returns the error of a real process that exited with code.
func exitWithStatus(t *testing.T, code int) error {
	t.Helper()
	return exec.Command("/bin/sh", "-c", fmt.Sprintf("exit %d", code)).Run()
}

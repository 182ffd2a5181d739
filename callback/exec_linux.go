//go:build linux

package callback

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setProcessGroup puts the command in a process group of its own and makes cancellation kill
// that whole group, so a timeout also ends whatever the command started.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Cgroups gives each exec run a cgroup v2 of its own, under a directory it keeps beside the
// agent in the agent's own cgroup, so that when the command exits, or is killed, everything it
// started is killed with it: a daemon that called setsid included, which its process group does
// not hold. Its methods are safe for concurrent use.
type Cgroups struct {
	dir string // holds one cgroup per run in progress
	log *slog.Logger
	seq atomic.Uint64

	mu     sync.Mutex
	broken error // set when the kernel refused to start a command in a cgroup: runs go without
}

// NewCgroups makes the directory name in the cgroup v2 hierarchy, under the cgroup this process
// runs in, for the exec runs' cgroups. A directory of that name that a killed earlier process
// left is emptied first: the processes its runs left are killed and their cgroups removed, so
// that nothing an earlier run of the same callbacks started still runs when the first callback
// of this process does. name must be a single path element; the agent derives it from its state
// file, which no two agents share.
//
// It fails, and exec callbacks are left to their process groups, where there is no cgroup v2
// (a cgroup v1 system), where this process may not write its cgroup (not root; systemd's
// ProtectControlGroups=) or where the cgroup cannot hold processes of its own children. It
// blocks while it kills and removes leftovers (a few milliseconds) and is safe for concurrent use.
func NewCgroups(name string, logger *slog.Logger) (*Cgroups, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return nil, fmt.Errorf("cgroups: name %q: want one path element", name)
	}
	own, err := ownCgroup("/proc/self")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(own, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cgroups: mkdir %s: %w", dir, err)
	}
	c := &Cgroups{dir: dir, log: logger}
	if n, err := c.sweep(); err != nil {
		return nil, err
	} else if n > 0 {
		logger.Warn("exec callbacks: ended the processes that runs of an earlier agent left behind", "cgroups", n, "dir", dir)
	}
	return c, nil
}

// Dir is the directory that holds the runs' cgroups. It does not block.
func (c *Cgroups) Dir() string { return c.dir }

// Close kills whatever runs in the runs' cgroups, removes them and the directory. It blocks until
// they are gone (or a few seconds) and is safe for concurrent use.
func (c *Cgroups) Close() error {
	if c == nil {
		return nil
	}
	if _, err := c.sweep(); err != nil {
		return err
	}
	if err := rmdirWhenEmpty(c.dir); err != nil {
		return fmt.Errorf("cgroups: remove %s: %w", c.dir, err)
	}
	return nil
}

// sweep kills and removes every cgroup under c.dir, returning how many there were.
func (c *Cgroups) sweep() (int, error) {
	entries, err := os.ReadDir(c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cgroups: read %s: %w", c.dir, err)
	}
	n := 0
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n++
		r := &cgroupRun{dir: filepath.Join(c.dir, e.Name()), fd: -1}
		r.kill()
		errs = append(errs, r.remove())
	}
	return n, errors.Join(errs...)
}

// disable makes later runs go without a cgroup, after the kernel refused to start one in it.
func (c *Cgroups) disable(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = err
		c.log.Warn("exec callbacks: the kernel would not start a command in a cgroup of its own; commands run in their own process group only, which a daemon that calls setsid escapes",
			"dir", c.dir, "err", err)
	}
}

func (c *Cgroups) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken == nil
}

// cgroupRun is the cgroup of one run.
type cgroupRun struct {
	dir string
	fd  int // the directory, open for clone3's CLONE_INTO_CGROUP; -1 once closed
}

// newRun makes the cgroup of one run.
func (c *Cgroups) newRun() (*cgroupRun, error) {
	dir := filepath.Join(c.dir, strconv.FormatUint(c.seq.Add(1), 10))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroups: mkdir %s: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("cgroups: open %s: %w", dir, err)
	}
	return &cgroupRun{dir: dir, fd: fd}, nil
}

// kill kills every process in the run's cgroup: at once with cgroup.kill (Linux 5.14), else one
// by one until none is left.
func (r *cgroupRun) kill() {
	if err := os.WriteFile(filepath.Join(r.dir, "cgroup.kill"), []byte("1"), 0); err == nil {
		return
	}
	for range 100 {
		b, err := os.ReadFile(filepath.Join(r.dir, "cgroup.procs"))
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if pid, err := strconv.Atoi(sc.Text()); err == nil && pid > 0 {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// remove closes the run's directory and removes its cgroup once the processes killed in it are
// gone. It blocks until then, for a few seconds at most.
func (r *cgroupRun) remove() error {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
	if err := rmdirWhenEmpty(r.dir); err != nil {
		return fmt.Errorf("cgroups: remove %s: %w", r.dir, err)
	}
	return nil
}

// rmdirWhenEmpty removes the cgroup dir, waiting for the processes killed in it to exit: rmdir
// fails with EBUSY until they have. It gives up after 5 s.
func rmdirWhenEmpty(dir string) error {
	wait := 100 * time.Microsecond
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := unix.Rmdir(dir)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case !errors.Is(err, unix.EBUSY) || time.Now().After(deadline):
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// ownCgroup returns the directory of the cgroup v2 that the process at proc (/proc/self) runs
// in, from its cgroup and mountinfo files.
func ownCgroup(proc string) (string, error) {
	b, err := os.ReadFile(filepath.Join(proc, "cgroup"))
	if err != nil {
		return "", fmt.Errorf("cgroups: %w", err)
	}
	path := ""
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "0::"); ok {
			path = p
		}
	}
	if path == "" {
		return "", fmt.Errorf("cgroups: %s/cgroup: this process is in no cgroup v2 (a cgroup v1 system)", proc)
	}
	mounts, err := os.ReadFile(filepath.Join(proc, "mountinfo"))
	if err != nil {
		return "", fmt.Errorf("cgroups: %w", err)
	}
	dir, ok := cgroup2Dir(string(mounts), path)
	if !ok {
		return "", fmt.Errorf("cgroups: no cgroup2 mount shows cgroup %s", path)
	}
	return dir, nil
}

// cgroup2Dir finds, in the text of a mountinfo file, a cgroup2 mount that shows the cgroup path
// and returns the cgroup's directory there.
func cgroup2Dir(mountinfo, path string) (string, bool) {
	for line := range strings.Lines(mountinfo) {
		// 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		pre, post, ok := strings.Cut(strings.TrimRight(line, "\n"), " - ")
		if !ok {
			continue
		}
		f, typ := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(typ) < 1 || typ[0] != "cgroup2" {
			continue
		}
		root, point := unescapeMount(f[3]), unescapeMount(f[4])
		rel, ok := strings.CutPrefix(path, root)
		if !ok || (rel != "" && !strings.HasPrefix(rel, "/") && root != "/") {
			continue
		}
		dir := filepath.Join(point, rel)
		if r, err := filepath.Rel(point, dir); err != nil || r == ".." || strings.HasPrefix(r, "../") {
			continue // a path with .. that leaves the mount
		}
		return dir, true
	}
	return "", false
}

// unescapeMount undoes the octal escapes (\040 for a space) of a mountinfo field.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// runCommand starts the command that build returns, whose context is ctx, and waits for it.
// When its process exits, whatever it left is killed before the process is reaped (so that its
// process group cannot have been handed on): its cgroup's processes, when it runs in one of cg,
// and its process group's. A command that exited 0 succeeds even when a process that escaped
// both holds its output open (leftOpen says so, and Wait's ErrWaitDelay is not returned), and
// even when ctx ended while that output was awaited. stopped is context.Cause(ctx) when the
// kill at ctx's end is what ended the process (ctx had ended when it exited, by SIGKILL), and
// nil otherwise: a command that exited on its own, however late its output was closed.
func runCommand(ctx context.Context, build func() *exec.Cmd, cg *Cgroups) (leftOpen bool, stopped, err error) {
	cmd := build()
	var run *cgroupRun
	if cg != nil && cg.usable() {
		if run, err = cg.newRun(); err != nil {
			cg.log.Warn("exec callbacks: no cgroup for this run; its process group only", "err", err)
			run = nil
		} else {
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = run.fd
		}
	}
	err = cmd.Start()
	if err != nil && run != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, exec.ErrNotFound) && !errors.Is(err, fs.ErrPermission) {
		// clone3 refused (an old kernel, a seccomp filter): once without the cgroup.
		cg.disable(err)
		run.remove()
		run = nil
		cmd = build()
		err = cmd.Start()
	}
	if err != nil {
		if run != nil {
			run.remove()
		}
		return false, nil, err
	}
	pid := cmd.Process.Pid
	// Wait for the exit without reaping: the process stays a zombie, and its pid and process
	// group ID cannot be given to another process while the group is killed.
	for {
		var info unix.Siginfo
		if e := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); e != unix.EINTR {
			break
		}
	}
	// Whether the kill at ctx's end can have ended it, whatever the cleanup below waits for.
	ended := context.Cause(ctx)
	if run != nil {
		run.kill()
	}
	unix.Kill(-pid, unix.SIGKILL)
	err = cmd.Wait()
	if run != nil {
		if e := run.remove(); e != nil {
			cg.log.Warn("exec callbacks: a run's cgroup is not empty after its kill; left for the next start", "err", e)
		}
	} else {
		waitGroupGone(pid)
	}
	state := cmd.ProcessState
	if state != nil && state.Success() {
		// Wait's error is ErrWaitDelay (a leftover held the output), or ctx's, which ended
		// after the exit, while that output was awaited.
		return errors.Is(err, exec.ErrWaitDelay), nil, nil
	}
	if state != nil && ended != nil {
		if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			stopped = ended
		}
	}
	return false, stopped, err
}

// waitGroupGone waits, for a second at most, until no process of the process group pgid, killed
// above, is alive: gone, or a zombie that its new parent has yet to reap (init may take a while).
func waitGroupGone(pgid int) {
	wait := 100 * time.Microsecond
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if err := unix.Kill(-pgid, 0); errors.Is(err, unix.ESRCH) || !groupAlive(pgid) {
			return
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// groupAlive reports whether a process of the process group pgid is alive (not a zombie).
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		if c := e.Name()[0]; c < '0' || c > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			return true
		}
	}
	return false
}

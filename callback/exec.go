package callback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// DefaultPath is the PATH an exec callback runs with: the notification is its whole environment
// otherwise, as with udev's RUN+=. A command named without a slash is looked up in it, not in
// the agent's own PATH.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LookPath returns the file an exec callback runs for the command name: name itself when it holds
// a slash, and it must then be absolute (commands run in /); else the first file called name in a
// directory of DefaultPath, whatever the agent's own PATH. The file must be a regular file with
// an execute permission bit. The error says what is wrong in the terms of the configuration. It
// does not block beyond a few stat calls and is safe for concurrent use.
func LookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			return "", fmt.Errorf("%s: a relative path: write it from / (commands run in /)", name)
		}
		return name, executable(name)
	}
	if name == "" || name == "." || name == ".." {
		return "", fmt.Errorf("%q: not a command name", name)
	}
	for _, dir := range filepath.SplitList(DefaultPath) {
		p := filepath.Join(dir, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q is in no directory of the exec PATH (%s): write its absolute path", name, DefaultPath)
}

// executable checks that path is a regular file (after symbolic links) with an execute bit.
func executable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: no such file", path)
	case err != nil:
		return err // stat /usr/local/bin/x: permission denied
	case fi.IsDir():
		return fmt.Errorf("%s: a directory, not an executable file", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s: not a regular file", path)
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s: not executable (no execute permission bit: chmod +x)", path)
	}
	return nil
}

// Exec configures a command run once per notification.
type Exec struct {
	// Command is the argument vector; Command[0] is the file LookPath returns for it, looked up
	// in DefaultPath when it has no slash, and stays argv[0]. There is no shell.
	Command []string
	// Timeout bounds one run; when it passes, the command is killed with everything it started
	// (see Cgroups). Zero means 30 s. A command that exited before it is judged by its exit
	// status even when what it left held its output open past it.
	Timeout time.Duration
	// OutputLimit caps the bytes of stdout and of stderr kept for the log. Zero means 4 KiB. The
	// reason given for a failure, the last line of stderr, is taken from its end all the same.
	OutputLimit int
	// Logger receives the command's output and failures; nil discards.
	Logger *slog.Logger
	// Limiter, shared by the exec callbacks of an agent, bounds how many of their commands run at
	// once; nil means no bound. The Timeout starts once a slot is obtained.
	Limiter *Limiter
	// Cgroups, shared by the exec callbacks of an agent, runs each command in a cgroup of its own,
	// so that everything it started is killed when it exits, a daemon that called setsid
	// included; nil (or a kernel that refuses) leaves each command its process group, which is
	// killed when it exits.
	Cgroups *Cgroups
}

// Limiter bounds the number of exec commands running at once across the callbacks that share
// it. Its methods are safe for concurrent use.
type Limiter struct {
	slots   chan struct{}
	waiting atomic.Int64
}

// NewLimiter returns a Limiter that lets n commands run at once. n <= 0 means no limit, and
// NewLimiter returns nil, which Exec accepts as such. It does not block.
func NewLimiter(n int) *Limiter {
	if n <= 0 {
		return nil
	}
	return &Limiter{slots: make(chan struct{}, n)}
}

// Limit returns the number of commands allowed to run at once; 0 for a nil Limiter (no limit).
// It does not block.
func (l *Limiter) Limit() int {
	if l == nil {
		return 0
	}
	return cap(l.slots)
}

// Running returns the number of commands holding a slot now. It does not block.
func (l *Limiter) Running() int {
	if l == nil {
		return 0
	}
	return len(l.slots)
}

// Waiting returns the number of callbacks waiting for a slot now. It does not block.
func (l *Limiter) Waiting() int {
	if l == nil {
		return 0
	}
	return int(l.waiting.Load())
}

// acquire blocks until a slot is free or ctx ends; it returns ctx.Err() in the second case.
// A nil Limiter returns at once.
func (l *Limiter) acquire(ctx context.Context) error {
	if l == nil {
		return nil
	}
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release frees the slot taken by acquire.
func (l *Limiter) release() {
	if l != nil {
		<-l.slots
	}
}

// Callback returns the notify.Callback that runs e. The callback blocks until a slot of
// e.Limiter is free and then until the command exits or is killed; it returns an error for a
// command that cannot start, exits non-zero or times out, and for a context that ends while it
// waits for a slot (the command then never starts). It is safe for concurrent use.
func (e Exec) Callback() notify.Callback {
	e = e.withDefaults()
	return func(ctx context.Context, n notify.Notification, _ any) error {
		return e.run(ctx, Env(n), notify.EventName(n.Event), n.SymbolicLinkName)
	}
}

// ChangeCallback returns the notify.ChangeCallback that runs e for each phase of a two-phase add,
// with ChangeEnv in its environment. A non-zero exit (or a failure to start, or the timeout) of
// the AddStart run is its error, and so vetoes the add; the command's context ends at the
// AddStart deadline, which kills its process group. It blocks as Callback does and is safe for
// concurrent use.
func (e Exec) ChangeCallback() notify.ChangeCallback {
	e = e.withDefaults()
	return func(ctx context.Context, n notify.ChangeNotification, _ any) error {
		return e.run(ctx, ChangeEnv(n), n.State.String(), n.SymbolicLinkName)
	}
}

// TargetCallback returns the notify.TargetCallback that runs e for each target-device event, with
// TargetEnv in its environment. A non-zero exit of the query-remove run vetoes the removal. It
// blocks as Callback does and is safe for concurrent use.
func (e Exec) TargetCallback() notify.TargetCallback {
	e = e.withDefaults()
	return func(ctx context.Context, n notify.TargetNotification, _ any) error {
		return e.run(ctx, TargetEnv(n), notify.EventName(n.Event), n.SymbolicLinkName)
	}
}

// ChangeEnv returns the environment an exec callback gets for a phase of a two-phase add:
// HOTPLUG_PHASE (add_start, add_complete, add_failure), HOTPLUG_EVENT (the same), HOTPLUG_CAUSE
// (uevent, request, existing), HOTPLUG_SEQNUM, HOTPLUG_STATUS (why an add_failure happened), and
// the interface's variables as for a notification (HOTPLUG_INTERFACE_CLASS, HOTPLUG_SYMBOLIC_LINK,
// HOTPLUG_CPU or HOTPLUG_MEMORY_*, HOTPLUG_NODE). A memory device (notify.FlagMemoryDevices)
// has HOTPLUG_MEMORY_DEVICE and HOTPLUG_MEMORY_BLOCKS (a list like 32-35) instead of
// HOTPLUG_MEMORY_BLOCK.
func ChangeEnv(n notify.ChangeNotification) []string {
	env := []string{
		"HOTPLUG_PHASE=" + n.State.String(),
		"HOTPLUG_EVENT=" + n.State.String(),
		"HOTPLUG_CAUSE=" + string(n.Cause),
		"HOTPLUG_SEQNUM=" + strconv.FormatUint(n.Seqnum, 10),
	}
	if n.Status != nil {
		env = append(env, "HOTPLUG_STATUS="+oneLine(n.Status.Error()))
	}
	return append(env, interfaceEnv(n.InterfaceClassGUID, n.SymbolicLinkName, n.Interface)...)
}

// TargetEnv returns the environment an exec callback gets for a target-device event:
// HOTPLUG_PHASE and HOTPLUG_EVENT (query_remove, remove_complete, remove_cancelled),
// HOTPLUG_EVENT_GUID (GUID_TARGET_DEVICE_*), HOTPLUG_REQUESTED (1 for a removal asked for through
// the control socket, 0 for a surprise removal), HOTPLUG_REQUESTER_UID and HOTPLUG_REQUESTER_PID
// (when requested), HOTPLUG_SEQNUM, HOTPLUG_STATUS (why a removal was cancelled), and the
// interface's variables.
func TargetEnv(n notify.TargetNotification) []string {
	env := []string{
		"HOTPLUG_PHASE=" + notify.EventName(n.Event),
		"HOTPLUG_EVENT=" + notify.EventName(n.Event),
		"HOTPLUG_EVENT_GUID=" + n.Event.String(),
		"HOTPLUG_SEQNUM=" + strconv.FormatUint(n.Seqnum, 10),
	}
	if n.Requested {
		env = append(env, "HOTPLUG_REQUESTED=1",
			"HOTPLUG_REQUESTER_UID="+strconv.Itoa(n.Requester.UID),
			"HOTPLUG_REQUESTER_PID="+strconv.Itoa(n.Requester.PID))
	} else {
		env = append(env, "HOTPLUG_REQUESTED=0")
	}
	if n.Status != nil {
		env = append(env, "HOTPLUG_STATUS="+oneLine(n.Status.Error()))
	}
	return append(env, interfaceEnv(n.Interface.ClassGUID, n.SymbolicLinkName, n.Interface)...)
}

// interfaceEnv returns the variables that describe an interface, as Env sets them.
func interfaceEnv(class uuid.UUID, link string, i notify.Interface) []string {
	env := []string{
		"HOTPLUG_INTERFACE_CLASS=" + notify.ClassName(class),
		"HOTPLUG_INTERFACE_CLASS_GUID=" + class.String(),
		"HOTPLUG_SYMBOLIC_LINK=" + link,
	}
	switch class {
	case notify.GUIDDeviceProcessor:
		env = append(env, "HOTPLUG_CPU="+strconv.Itoa(i.Number))
	case notify.GUIDDeviceMemory:
		if i.IsMemoryDevice() {
			env = append(env, "HOTPLUG_MEMORY_BLOCKS="+i.Blocks)
		} else {
			env = append(env, "HOTPLUG_MEMORY_BLOCK="+strconv.Itoa(i.Number))
		}
		env = append(env,
			"HOTPLUG_MEMORY_PHYS_START=0x"+strconv.FormatUint(i.PhysStart, 16),
			"HOTPLUG_MEMORY_SIZE="+strconv.FormatUint(i.Size, 10))
		if i.Device != "" {
			env = append(env, "HOTPLUG_MEMORY_DEVICE="+i.Device)
		}
	}
	if i.Node >= 0 {
		env = append(env, "HOTPLUG_NODE="+strconv.Itoa(i.Node))
	}
	return env
}

// lastLine returns the last non-empty line of s, its control bytes escaped (see escapeControl),
// at most 200 bytes of it. It is a command's reason for a veto: the others get it in
// HOTPLUG_STATUS, where a NUL would keep their commands from starting, and people read it in
// logs and on a terminal.
func lastLine(s string) string {
	s = strings.TrimRight(s, "\r\n\t ")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	s = escapeControl(strings.TrimSpace(s))
	if len(s) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// oneLine keeps an error message on one line for the environment, with its other control bytes
// escaped: exec refuses an environment that holds a NUL.
func oneLine(s string) string {
	return escapeControl(strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " "))
}

// escapeControl returns s with each control character but the tab (C0, DEL, C1) and each byte
// that is not UTF-8 written as a Go escape (\x00, \x1b, \u0085), so that the result holds no NUL
// and writes no control sequence to a terminal. Printable text, backslashes included, is kept as
// it is.
func escapeControl(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || (r != '\t' && unicode.IsControl(r)) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r != '\t' && unicode.IsControl(r) && r < 0x80:
			fmt.Fprintf(&b, "\\x%02x", r)
		case r != '\t' && unicode.IsControl(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func (e Exec) withDefaults() Exec {
	if e.Timeout <= 0 {
		e.Timeout = 30 * time.Second
	}
	if e.OutputLimit <= 0 {
		e.OutputLimit = 4096
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	return e
}

// errExecTimeout is the cause of an exec run's context when its Timeout passes.
var errExecTimeout = errors.New("exec timeout")

// run runs the command once with env (and PATH); event and link label its log lines.
func (e Exec) run(ctx context.Context, env []string, event, link string) error {
	if len(e.Command) == 0 {
		return errors.New("exec: empty command")
	}
	path, err := LookPath(e.Command[0])
	if err != nil {
		return fmt.Errorf("exec %s: %w", e.Command[0], err)
	}
	if err := e.Limiter.acquire(ctx); err != nil {
		return fmt.Errorf("exec %s: waiting for one of the %d process slots: %w", e.Command[0], e.Limiter.Limit(), err)
	}
	defer e.Limiter.release()
	parent := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, e.Timeout, errExecTimeout)
	defer cancel()
	stdout := &cappedBuffer{limit: e.OutputLimit}
	stderr := &cappedBuffer{limit: e.OutputLimit, tail: reasonTail}
	build := func() *exec.Cmd {
		stdout.reset()
		stderr.reset()
		cmd := exec.CommandContext(ctx, path, e.Command[1:]...)
		cmd.Args[0] = e.Command[0] // as a shell would, the name as written
		cmd.Env = append(slices.Clip(env), "PATH="+DefaultPath)
		cmd.Dir = "/"
		cmd.Stdout, cmd.Stderr = stdout, stderr
		setProcessGroup(cmd)
		// A process that escaped the kill and keeps the output pipes open (a daemon that called
		// setsid, without a cgroup) must not hold the callback longer than this.
		cmd.WaitDelay = time.Second
		return cmd
	}
	start := time.Now()
	// When the command exits, what it left running is killed: udev's RUN+= rule, that a program
	// must not leave processes behind, enforced as systemd-udevd enforces it.
	leftOpen, stopped, err := runCommand(ctx, build, e.Cgroups)
	if leftOpen {
		e.Logger.Warn("exec callback: a process the command started escaped its process group and keeps its output open; it was left running (without a cgroup of its own a command cannot be followed past setsid)",
			"command", e.Command[0], "event", event, "symbolic_link", link)
	}
	attrs := []slog.Attr{
		slog.String("command", e.Command[0]),
		slog.String("event", event),
		slog.String("symbolic_link", link),
		slog.Duration("took", time.Since(start)),
	}
	if stdout.Len() > 0 {
		attrs = append(attrs, slog.String("stdout", stdout.String()))
	}
	if stderr.Len() > 0 {
		attrs = append(attrs, slog.String("stderr", stderr.String()))
	}
	// Only a kill that ended the command makes it a timeout: one that exited before it (0, or
	// its own failure) is judged by its exit, however long what it left kept its output open.
	switch {
	case errors.Is(stopped, errExecTimeout):
		err = fmt.Errorf("exec %s: killed after the %s timeout", e.Command[0], e.Timeout)
	case stopped != nil:
		// The caller's deadline (an AddStart or query-remove deadline) or cancellation.
		err = fmt.Errorf("exec %s: killed: %w", e.Command[0], parent.Err())
	case err != nil && stderr.Len() > 0:
		// The command's own last word says why: a vetoing script's reason, for one.
		err = fmt.Errorf("exec %s: %w: %s", e.Command[0], err, stderr.lastLine())
	case err != nil:
		err = fmt.Errorf("exec %s: %w", e.Command[0], err)
	}
	if err == nil && (stdout.Len() > 0 || stderr.Len() > 0) {
		e.Logger.LogAttrs(ctx, slog.LevelInfo, "exec callback output", attrs...)
	}
	// A failure is returned, and the registry logs and counts it; the output goes with it here.
	if err != nil && (stdout.Len() > 0 || stderr.Len() > 0) {
		e.Logger.LogAttrs(context.WithoutCancel(ctx), slog.LevelWarn, "exec callback failed", append(attrs, slog.String("error", err.Error()))...)
	}
	return err
}

// reasonTail is how many of the last bytes of stderr an exec run keeps beside the first
// OutputLimit, to find the command's last line, its reason for failing, after a long output.
const reasonTail = 512

// cappedBuffer keeps the first limit bytes written and counts the rest. With tail > 0 it also
// keeps the last tail bytes written, whose last line lastLine returns.
type cappedBuffer struct {
	buf     bytes.Buffer
	limit   int
	dropped int
	tail    int
	end     []byte // the last bytes written: the last tail of them, or up to twice as many
	written int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	room := c.limit - c.buf.Len()
	switch {
	case room >= len(p):
		c.buf.Write(p)
	case room > 0:
		c.buf.Write(p[:room])
		c.dropped += len(p) - room
	default:
		c.dropped += len(p)
	}
	c.written += n
	if c.tail > 0 {
		if len(p) > c.tail {
			p = p[len(p)-c.tail:]
		}
		if len(c.end)+len(p) > 2*c.tail {
			c.end = append(c.end[:0], c.end[len(c.end)-(c.tail-len(p)):]...)
		}
		c.end = append(c.end, p...)
	}
	return n, nil
}

func (c *cappedBuffer) Len() int { return c.buf.Len() }

func (c *cappedBuffer) reset() { c.buf.Reset(); c.dropped = 0; c.end = c.end[:0]; c.written = 0 }

func (c *cappedBuffer) String() string {
	s := string(bytes.TrimRight(c.buf.Bytes(), "\n"))
	if c.dropped > 0 {
		s += fmt.Sprintf(" [%d more bytes dropped]", c.dropped)
	}
	return s
}

// lastLine returns the last non-empty line written, as the function lastLine shows it: from all
// that was written when it fits the limit, else from the tail kept, whose first line is whole
// only if the tail holds the start of the output. When no line in the tail is whole and
// non-empty (the last line is longer than the tail), it is the end of that line after "...".
func (c *cappedBuffer) lastLine() string {
	if c.dropped == 0 || c.tail <= 0 {
		return lastLine(c.buf.String())
	}
	end := c.end[max(0, len(c.end)-c.tail):]
	if c.written > len(end) {
		// The first line of end began before it.
		if i := bytes.IndexByte(end, '\n'); i >= 0 && len(bytes.TrimSpace(end[i+1:])) > 0 {
			return lastLine(string(end[i+1:]))
		}
		return lastLine("..." + strings.TrimLeft(string(end), "\r\n\t "))
	}
	return lastLine(string(end))
}

package qemu

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// GuestAgent is a connection to qemu-guest-agent (qemu-ga) in a guest, over the virtio-serial
// port org.qemu.guest_agent.0 that Config.GuestAgent adds: the systemd guest's way to run
// commands (guest-exec) with no shell on its console and no ssh. The protocol is QMP's JSON
// without a greeting or capabilities; after guest-sync-delimited, replies are matched by that
// command's id. One command at a time: the methods serialise themselves and are safe for
// concurrent use.
type GuestAgent struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
	id   int64
	// dirty: a command was abandoned (its context ended): its reply may still come, so the next
	// command resynchronises first.
	dirty bool
}

// DialGuestAgent connects to the host end of the guest agent's port (a unix socket QEMU serves)
// and waits until the agent in the guest answers guest-sync-delimited, which it does once the
// guest has booted far enough to start it. It retries every second until ctx ends, and the error
// then says so.
func DialGuestAgent(ctx context.Context, path string) (*GuestAgent, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("guest agent: connect %s: %w", path, err)
	}
	ga := &GuestAgent{conn: conn, r: bufio.NewReaderSize(conn, 1<<20), id: time.Now().UnixNano() % 1e9}
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err = ga.sync(actx)
		cancel()
		if err == nil {
			return ga, nil
		}
		if ctx.Err() != nil {
			conn.Close()
			return nil, fmt.Errorf("guest agent: waiting for the guest's qemu-ga to answer guest-sync-delimited: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

// Close closes the connection.
func (ga *GuestAgent) Close() error { return ga.conn.Close() }

// sync sends guest-sync-delimited with a new id and reads until its reply: the agent puts a 0xFF
// byte before it, so anything left from earlier, unanswered attempts (the port buffers what was
// sent before the agent started) is skipped.
func (ga *GuestAgent) sync(ctx context.Context) error {
	ga.mu.Lock()
	defer ga.mu.Unlock()
	return ga.syncLocked(ctx)
}

func (ga *GuestAgent) syncLocked(ctx context.Context) error {
	ga.id++
	id := ga.id
	stop := context.AfterFunc(ctx, func() { ga.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		ga.conn.SetDeadline(time.Time{})
	}()
	if _, err := fmt.Fprintf(ga.conn, "{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%d}}\n", id); err != nil {
		return err
	}
	for {
		if _, err := ga.r.ReadBytes(0xff); err != nil {
			return err
		}
		line, err := ga.r.ReadBytes('\n')
		if err != nil {
			return err
		}
		var resp struct {
			Return int64 `json:"return"`
		}
		if json.Unmarshal(line, &resp) == nil && resp.Return == id {
			ga.dirty = false
			return nil
		}
	}
}

// Execute runs a guest agent command and decodes its "return" into result (unless nil). ctx
// bounds the wait; a reply that does not come in time leaves the connection unusable (the next
// call resynchronises it).
func (ga *GuestAgent) Execute(ctx context.Context, command string, args, result any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ga.mu.Lock()
	defer ga.mu.Unlock()
	if ga.dirty {
		if err := ga.syncLocked(ctx); err != nil {
			return fmt.Errorf("guest agent %s: resynchronising after an abandoned command: %w", command, ctxErr(ctx, err))
		}
	}
	stop := context.AfterFunc(ctx, func() { ga.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		ga.conn.SetDeadline(time.Time{})
	}()
	if _, err := ga.conn.Write(append(b, '\n')); err != nil {
		ga.dirty = true
		return fmt.Errorf("guest agent %s: %w", command, ctxErr(ctx, err))
	}
	for {
		line, err := ga.r.ReadBytes('\n')
		if err != nil {
			ga.dirty = true
			return fmt.Errorf("guest agent %s: waiting for the reply: %w", command, ctxErr(ctx, err))
		}
		line = []byte(strings.TrimLeft(string(line), "\xff"))
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			continue // a stray line (a late reply to an abandoned sync)
		}
		if resp.Error != nil {
			return fmt.Errorf("guest agent %s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		}
		if resp.Return == nil {
			continue
		}
		if result != nil {
			return json.Unmarshal(resp.Return, result)
		}
		return nil
	}
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// ExecResult is how a command run in the guest ended.
type ExecResult struct {
	// ExitCode is the exit status, or -1 when a signal ended the command (Signal).
	ExitCode int
	Signal   int
	Stdout   string
	Stderr   string
}

// Success reports whether the command exited 0.
func (r ExecResult) Success() bool { return r.ExitCode == 0 && r.Signal == 0 }

func (r ExecResult) String() string {
	s := fmt.Sprintf("exit %d", r.ExitCode)
	if r.Signal != 0 {
		s = fmt.Sprintf("signal %d", r.Signal)
	}
	if o := strings.TrimSpace(r.Stdout); o != "" {
		s += "; stdout: " + o
	}
	if e := strings.TrimSpace(r.Stderr); e != "" {
		s += "; stderr: " + e
	}
	return s
}

// Exec runs argv in the guest (guest-exec, with PATH set, the output captured and stdin given
// as input) and waits for it to end, polling guest-exec-status, until ctx ends: the error then
// names the command. A command that runs but fails is not an error: see ExecResult.
func (ga *GuestAgent) Exec(ctx context.Context, stdin []byte, argv ...string) (ExecResult, error) {
	if len(argv) == 0 {
		return ExecResult{}, errors.New("guest agent: exec: no command")
	}
	args := map[string]any{
		"path": argv[0], "arg": argv[1:], "capture-output": true,
		"env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"},
	}
	if stdin != nil {
		args["input-data"] = base64.StdEncoding.EncodeToString(stdin)
	}
	var started struct {
		PID int `json:"pid"`
	}
	what := strings.Join(argv, " ")
	if err := ga.Execute(ctx, "guest-exec", args, &started); err != nil {
		return ExecResult{}, fmt.Errorf("run %q in the guest: %w", what, err)
	}
	wait := 10 * time.Millisecond
	for {
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode *int   `json:"exitcode"`
			Signal   *int   `json:"signal"`
			OutData  string `json:"out-data"`
			ErrData  string `json:"err-data"`
			OutTrunc bool   `json:"out-truncated"`
			ErrTrunc bool   `json:"err-truncated"`
		}
		if err := ga.Execute(ctx, "guest-exec-status", map[string]any{"pid": started.PID}, &st); err != nil {
			return ExecResult{}, fmt.Errorf("waiting for %q (pid %d) in the guest: %w", what, started.PID, err)
		}
		if st.Exited {
			r := ExecResult{ExitCode: -1}
			if st.ExitCode != nil {
				r.ExitCode = *st.ExitCode
			}
			if st.Signal != nil {
				r.Signal = *st.Signal
			}
			out, _ := base64.StdEncoding.DecodeString(st.OutData)
			errOut, _ := base64.StdEncoding.DecodeString(st.ErrData)
			r.Stdout, r.Stderr = string(out), string(errOut)
			if st.OutTrunc || st.ErrTrunc {
				r.Stderr += "\n(output truncated by the guest agent)"
			}
			return r, nil
		}
		select {
		case <-ctx.Done():
			return ExecResult{}, fmt.Errorf("waiting for %q (pid %d) in the guest to exit: %w", what, started.PID, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

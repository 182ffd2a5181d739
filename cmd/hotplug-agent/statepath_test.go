//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// TestIntegrationStatePathRefused runs the binary with a --path.state it must not use: a FIFO
// (which hung start-up for ever), a null device (which was replaced by a regular file), a
// forged state file of another user (which was believed: its CPU was announced removed at
// start-up). Each time the agent must exit 1 within seconds with one line naming the path and
// the problem, announce nothing, and leave the path as it was.
func TestIntegrationStatePathRefused(t *testing.T) {
	// forged announced a CPU this machine does not have: believed, its removal is announced.
	const forged = `{"version": 1, "saved_at": "2026-11-21T23:50:00Z", "last_event_id": 7, "clean_shutdown": true, "interfaces": [
  {"class_guid": "97fadb10-4e33-40ae-359c-8bef029dbdd0", "symbolic_link": "/sys/devices/system/cpu/cpu999999", "number": 999999, "node": 0, "state": "online"}]}
`
	tests := []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"a FIFO", func(t *testing.T, path string) {
			if err := unix.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is a FIFO (named pipe), not a regular file"},
		{"a null device", func(t *testing.T, path string) {
			if os.Geteuid() != 0 {
				testenv.Unavailable(t, "needs root: it makes a device node")
			}
			if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
		}, "is a character device, not a regular file"},
		{"a forged state file of another user", func(t *testing.T, path string) {
			if os.Geteuid() != 0 {
				testenv.Unavailable(t, "needs root: it gives a file to another user")
			}
			if err := os.WriteFile(path, []byte(forged), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, fmt.Sprintf("owned by uid 65534, not by uid %d that this process runs as", os.Geteuid())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			tt.make(t, path)
			var before unix.Stat_t
			if err := unix.Lstat(path, &before); err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			cfg := recordingConfig(t, out) // records every processor notification

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, "run", "--web.listen-address=127.0.0.1:0", "--control.socket=",
				"--config.file="+cfg, "--path.state="+path)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			var exit *exec.ExitError
			switch {
			case ctx.Err() != nil:
				t.Fatalf("the agent was still running after %v with --path.state at %s; stderr:\n%s", took.Round(time.Millisecond), tt.name, stderr.String())
			case !errors.As(err, &exit) || exit.ExitCode() != 1:
				t.Fatalf("the agent exited with %v; want exit status 1; stderr:\n%s", err, stderr.String())
			}
			t.Logf("exit 1 after %v", took.Round(time.Millisecond))

			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			want := "hotplug-agent run: statefile: load " + path + ": " + tt.want
			if last := lines[len(lines)-1]; last != want {
				t.Errorf("last line on stderr:\n  %s\nwant:\n  %s", last, want)
			}
			if n := strings.Count(stderr.String(), path); n != 1 {
				t.Errorf("stderr names %s %d times; want once, in its last line:\n%s", path, n, stderr.String())
			}
			if entries, _ := os.ReadDir(out); len(entries) > 0 {
				t.Errorf("the agent announced %d notifications (the first: %s); want none", len(entries), entries[0].Name())
			}
			var after unix.Stat_t
			if err := unix.Lstat(path, &after); err != nil {
				t.Fatal(err)
			}
			if after.Mode != before.Mode || after.Ino != before.Ino || after.Uid != before.Uid || after.Rdev != before.Rdev {
				t.Errorf("the agent changed %s: mode %o inode %d uid %d, then mode %o inode %d uid %d",
					path, before.Mode, before.Ino, before.Uid, after.Mode, after.Ino, after.Uid)
			}
		})
	}
}

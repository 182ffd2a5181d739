package qemu

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeGuestAgent serves the guest agent's protocol on a unix socket: it ignores the first sync
// requests (as the port does before qemu-ga starts), answers later ones after some stale output,
// and runs one command, "echo", that takes two status polls to exit.
func fakeGuestAgent(t *testing.T, ignoreSyncs int) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qga.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		sc := bufio.NewScanner(conn)
		polls := 0
		var args []string
		for sc.Scan() {
			var req struct {
				Execute   string          `json:"execute"`
				Arguments json.RawMessage `json:"arguments"`
			}
			if json.Unmarshal(sc.Bytes(), &req) != nil {
				fmt.Fprintf(conn, `{"error":{"class":"GenericError","desc":"Invalid JSON syntax"}}`+"\n")
				continue
			}
			switch req.Execute {
			case "guest-sync-delimited":
				if ignoreSyncs > 0 {
					ignoreSyncs--
					continue
				}
				var a struct{ ID int64 }
				json.Unmarshal(req.Arguments, &a)
				// Output left over from before, then the delimiter and the answer.
				fmt.Fprintf(conn, "{\"return\": 1}\n\xff{\"return\": %d}\n", a.ID)
			case "guest-exec":
				var a struct {
					Path  string   `json:"path"`
					Arg   []string `json:"arg"`
					Input string   `json:"input-data"`
				}
				json.Unmarshal(req.Arguments, &a)
				in, _ := base64.StdEncoding.DecodeString(a.Input)
				args = append([]string{a.Path}, a.Arg...)
				args = append(args, string(in))
				fmt.Fprintf(conn, `{"return": {"pid": 42}}`+"\n")
			case "guest-exec-status":
				if polls++; polls < 2 {
					fmt.Fprintf(conn, `{"return": {"exited": false}}`+"\n")
					continue
				}
				out := base64.StdEncoding.EncodeToString([]byte(strings.Join(args, " ")))
				fmt.Fprintf(conn, `{"return": {"exited": true, "exitcode": 3, "out-data": %q}}`+"\n", out)
			default:
				fmt.Fprintf(conn, `{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}}`+"\n", req.Execute)
			}
		}
	}()
	return sock
}

func TestGuestAgentExec(t *testing.T) {
	sock := fakeGuestAgent(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ga, err := DialGuestAgent(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ga.Close()
	r, err := ga.Exec(ctx, []byte("in"), "echo", "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ExecResult{ExitCode: 3, Stdout: "echo a b in"}, r); diff != "" {
		t.Errorf("Exec (-want +got):\n%s", diff)
	}
	if r.Success() {
		t.Errorf("exit 3 is a success?")
	}
	err = ga.Execute(ctx, "guest-nothing", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("unknown command: %v; want the agent's error", err)
	}
}

func TestDialGuestAgentSaysWhatItWaitedFor(t *testing.T) {
	sock := fakeGuestAgent(t, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := DialGuestAgent(ctx, sock)
	if err == nil || !strings.Contains(err.Error(), "guest-sync-delimited") {
		t.Errorf("DialGuestAgent to a silent agent: %v; want an error naming what it waited for", err)
	}
}

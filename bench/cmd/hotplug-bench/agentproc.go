//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// agentProc is the real agent binary, running.
type agentProc struct {
	cmd   *exec.Cmd
	pid   int
	addr  string        // host:port of its HTTP API
	ready time.Duration // from just before the fork to reading its "agent ready" log line
	done  chan error    // Wait's result
	log   *os.File      // its stderr
	once  sync.Once
	err   error // stop's result
}

// startAgentProc starts bin run with args after the benchmark's own: HTTP on a free port of
// 127.0.0.1, no state file, JSON logs. It returns once the agent has logged "agent ready".
func startAgentProc(ctx context.Context, bin, logPath string, args ...string) (*agentProc, error) {
	args = append([]string{"run", "--web.listen-address=127.0.0.1:0", "--path.state=", "--log.format=json"}, args...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &agentProc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan error, 1), log: logf}
	type ready struct {
		at   time.Time
		addr string
	}
	readyc := make(chan ready, 1)
	go func() {
		r := bufio.NewReader(stderr)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				at := time.Now()
				var rec struct {
					Msg    string `json:"msg"`
					Listen string `json:"listen"`
				}
				if json.Unmarshal(line, &rec) == nil && rec.Msg == "agent ready" {
					readyc <- ready{at, rec.Listen}
				}
				logf.Write(line)
			}
			if err != nil {
				return
			}
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	select {
	case r := <-readyc:
		p.ready, p.addr = r.at.Sub(t0), r.addr
		return p, nil
	case err := <-p.done:
		logf.Close()
		b, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("agent exited before ready: %v\n%s", err, b)
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	p.stop()
	return nil, errors.New("agent not ready within 30 s")
}

// stop ends the agent with SIGTERM (SIGKILL after 10 s) and waits for it. Later calls return
// the first one's result.
func (p *agentProc) stop() error {
	p.once.Do(func() {
		syscall.Kill(p.pid, syscall.SIGTERM)
		select {
		case p.err = <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-p.pid, syscall.SIGKILL)
			p.err = <-p.done
		}
		p.log.Close()
	})
	return p.err
}

// scrape returns the agent's metrics.
func (p *agentProc) scrape() (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(io.Reader(resp.Body))
}

// sum adds the values of the samples of family name whose labels include every pair of match.
func sum(mf map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	f := mf[name]
	if f == nil {
		return 0
	}
	var total float64
next:
	for _, m := range f.GetMetric() {
		for k, v := range match {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Untyped != nil:
			total += m.Untyped.GetValue()
		}
	}
	return total
}

// netlinkQueue is what /proc/net/netlink says of a uevent socket.
type netlinkQueue struct {
	Rmem  int64 // bytes queued, not yet read
	Drops int64 // datagrams the kernel could not queue
}

// ueventSockets returns the inodes of pid's sockets.
func socketInodes(pid int) (map[string]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range ents {
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(t, "socket:["); ok {
			out[strings.TrimSuffix(ino, "]")] = true
		}
	}
	return out, nil
}

// readNetlink returns the NETLINK_KOBJECT_UEVENT sockets among inodes, from /proc/net/netlink.
func readNetlink(inodes map[string]bool) (netlinkQueue, bool, error) {
	b, err := os.ReadFile("/proc/net/netlink")
	if err != nil {
		return netlinkQueue{}, false, err
	}
	// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[1] != strconv.Itoa(syscall.NETLINK_KOBJECT_UEVENT) || !inodes[f[9]] {
			continue
		}
		rmem, err1 := strconv.ParseInt(f[4], 10, 64)
		drops, err2 := strconv.ParseInt(f[8], 10, 64)
		if err1 != nil || err2 != nil {
			return netlinkQueue{}, false, fmt.Errorf("/proc/net/netlink: %q", line)
		}
		return netlinkQueue{Rmem: rmem, Drops: drops}, true, nil
	}
	return netlinkQueue{}, false, nil
}

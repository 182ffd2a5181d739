package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeQMP is the QEMU end of a QMP connection, scripted by the test.
type fakeQMP struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func newFake(t *testing.T) (*fakeQMP, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &fakeQMP{t: t, conn: a, r: bufio.NewReader(a)}, b
}

// send writes one message the way QEMU does: JSON and CRLF.
func (f *fakeQMP) send(s string) {
	if _, err := f.conn.Write([]byte(s + "\r\n")); err != nil {
		f.t.Errorf("fake QMP write: %v", err)
	}
}

type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        string          `json:"id"`
}

func (f *fakeQMP) recv() request {
	line, err := f.r.ReadBytes('\n')
	if err != nil {
		f.t.Errorf("fake QMP read: %v", err)
		return request{}
	}
	var r request
	if err := json.Unmarshal(line, &r); err != nil {
		f.t.Errorf("fake QMP: bad request %q: %v", line, err)
	}
	return r
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}`

// handshake plays QEMU's side of the greeting and capabilities negotiation.
func (f *fakeQMP) handshake() {
	f.send(greeting)
	r := f.recv()
	if r.Execute != "qmp_capabilities" {
		f.t.Errorf("first command %q; want qmp_capabilities", r.Execute)
	}
	f.send(`{"return": {}, "id": "` + r.ID + `"}`)
}

func dialFake(t *testing.T, opts ...DialOption) (*fakeQMP, *Client) {
	t.Helper()
	f, conn := newFake(t)
	done := make(chan struct{})
	go func() { defer close(done); f.handshake() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := NewClient(ctx, conn, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	<-done
	t.Cleanup(func() { c.Close() })
	return f, c
}

func TestClientExecuteWithInterleavedEvents(t *testing.T) {
	var seen []string
	f, c := dialFake(t, WithEventHandler(func(e Event) { seen = append(seen, e.Name) }))
	sub := c.Subscribe()
	go func() {
		r := f.recv()
		if r.Execute != "query-hotpluggable-cpus" || r.ID == "" {
			t.Errorf("got request %+v", r)
		}
		// An event before the reply, one after: both must reach subscribers, in order.
		f.send(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "ACPI_DEVICE_OST", "data": {"info": {"device": "cpu-1", "slot": "1", "slot-type": "CPU", "source": 1, "status": 0}}}`)
		f.send(`{"return": [{"props": {"core-id": 1, "thread-id": 0, "socket-id": 0}, "vcpus-count": 1, "type": "qemu64-x86_64-cpu"}], "id": "` + r.ID + `"}`)
		f.send(`{"timestamp": {"seconds": 1700000001, "microseconds": 0}, "event": "DEVICE_DELETED", "data": {"device": "dimm-1", "path": "/machine/peripheral/dimm-1"}}`)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var cpus []HotpluggableCPU
	if err := c.Execute(ctx, "query-hotpluggable-cpus", nil, &cpus); err != nil {
		t.Fatal(err)
	}
	if len(cpus) != 1 || cpus[0].Type != "qemu64-x86_64-cpu" || *cpus[0].Props.CoreID != 1 || cpus[0].Plugged() {
		t.Errorf("decoded %+v", cpus)
	}
	e, err := sub.Wait(ctx, "DEVICE_DELETED", DeviceIs("dimm-1"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Time.Unix() != 1700000001 {
		t.Errorf("event time %v", e.Time)
	}
	// The subscription saw the OST first (skipped by Wait); a new one from the start sees it.
	if got := c.Events(); len(got) != 2 || got[0].Name != "ACPI_DEVICE_OST" || !OSTFor("cpu-1")(got[0]) {
		t.Errorf("Events() = %v", got)
	}
	if strings.Join(seen, ",") != "ACPI_DEVICE_OST,DEVICE_DELETED" {
		t.Errorf("event handler saw %v", seen)
	}
}

func TestClientErrorReply(t *testing.T) {
	f, c := dialFake(t)
	go func() {
		r := f.recv()
		var args map[string]any
		json.Unmarshal(r.Arguments, &args)
		if args["id"] != "cpu-9" {
			t.Errorf("arguments %s", r.Arguments)
		}
		f.send(`{"error": {"class": "DeviceNotFound", "desc": "Device 'cpu-9' not found"}, "id": "` + r.ID + `"}`)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Execute(ctx, "device_del", map[string]any{"id": "cpu-9"}, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" || qe.Command != "device_del" {
		t.Fatalf("err = %v; want a DeviceNotFound *Error of device_del", err)
	}
}

func TestClientConcurrentRepliesOutOfOrder(t *testing.T) {
	f, c := dialFake(t)
	go func() {
		a, b := f.recv(), f.recv()
		f.send(`{"return": "` + b.Execute + `", "id": "` + b.ID + `"}`)
		f.send(`{"return": "` + a.Execute + `", "id": "` + a.ID + `"}`)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 2)
	for _, cmd := range []string{"one", "two"} {
		go func() {
			var got string
			err := c.Execute(ctx, cmd, nil, &got)
			if err == nil && got != cmd {
				err = errors.New(cmd + " got the reply of " + got)
			}
			errc <- err
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

func TestClientDeadlineAndClose(t *testing.T) {
	f, c := dialFake(t)
	// Read a command and never answer; then read one more and close the connection.
	go func() { f.recv(); f.recv(); f.conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Execute(ctx, "stop", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want DeadlineExceeded", err)
	}
	// QEMU goes away: a pending call and a waiting subscription end with ErrClosed.
	sub := c.Subscribe()
	errc := make(chan error, 1)
	go func() {
		_, err := sub.Next(context.Background())
		errc <- err
	}()
	err := c.Execute(context.Background(), "quit", nil, nil)
	if err == nil {
		t.Fatal("Execute after QEMU closed: no error")
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscription.Next: %v; want ErrClosed", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after QEMU closed the connection")
	}
}

func TestNewClientRejectsNonQMP(t *testing.T) {
	f, conn := newFake(t)
	go f.send(`SSH-2.0-OpenSSH_9.2`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := NewClient(ctx, conn); err == nil || !strings.Contains(err.Error(), "not a QMP greeting") {
		t.Fatalf("err = %v", err)
	}
}

func TestNewClientGreetingDeadline(t *testing.T) {
	_, conn := newFake(t) // says nothing
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := NewClient(ctx, conn); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want DeadlineExceeded", err)
	}
}

func TestSubscriptionWaitSaysWhatItWaitedFor(t *testing.T) {
	f, c := dialFake(t)
	sub := c.Subscribe()
	f.send(`{"event": "RESET", "data": {"guest": true}, "timestamp": {"seconds": 1, "microseconds": 0}}`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := sub.Wait(ctx, "DEVICE_DELETED", DeviceIs("dimm-1"))
	if err == nil || !strings.Contains(err.Error(), "DEVICE_DELETED") || !strings.Contains(err.Error(), "RESET") {
		t.Fatalf("err = %v; want it to name the event waited for and those seen", err)
	}
}

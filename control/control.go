// Package control is the agent's local, privileged control interface: a Unix socket on which
// root asks the agent to take CPUs and memory blocks offline or online (hotplug-agent offline,
// hotplug-agent online). It is never reachable over the network or the HTTP port. The socket is
// created with mode 0600, and each connection's peer credentials (SO_PEERCRED) are checked: only
// uid 0 may make requests, and every request is logged with the peer's uid and pid.
//
// The protocol is one JSON request per connection, answered by one JSON response:
//
//	{"op":"offline","targets":[{"kind":"cpu","id":"1"},{"kind":"memory","id":"0"}]}
//	{"results":[{"kind":"cpu","id":"1","response":"success"},
//	            {"kind":"memory","id":"0","response":"operation-failed","error":"...","error_code":16,"error_name":"EBUSY"}]}
//
// The per-item responses are those of qemu-guest-agent's guest-set-memory-blocks: success,
// not-found, operation-not-supported, operation-failed (with the kernel's errno when it refused).
//
// A request may also ask for progress and set a deadline. With "progress": true the agent first
// writes one line per block of a memory device as it goes, then the response; with
// "timeout_ms" it stops when the deadline passes (the blocks of a memory device already taken
// offline are brought back online, as after a veto) and the items not begun fail:
//
//	{"op":"offline","targets":[{"kind":"memory-device","id":"PNP0C80:00"}],"progress":true,"timeout_ms":300000}
//	{"progress":{"device":"PNP0C80:00","block":35,"state":"offline","done":1,"of":4,"freed_bytes":134217728,"result":"success","elapsed_ms":412}}
//	...
//	{"results":[{"kind":"memory-device","id":"PNP0C80:00","response":"success","freed_bytes":536870912,"freed_blocks":4}],"freed_bytes":536870912}
//
// A client cancels its request by sending {"cancel":true} after it, then reads on for the
// response (the rollback's outcome), or by closing the connection. An item stopped early has
// "stopped" set to why: "cancelled", "timeout", "client-gone" or "agent-stopping". A client that only shuts
// down its sending side (as socat and nc -N do once they have sent the request) is not cancelling:
// it still gets its response.
package control

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// DefaultSocket is where the agent listens unless told otherwise (--control.socket), under the
// systemd unit's RuntimeDirectory.
const DefaultSocket = "/run/hotplug-agent/control.sock"

// The operations.
const (
	OpOnline  = "online"
	OpOffline = "offline"
	// OpReload takes no targets: the agent reads its configuration file again and applies it
	// (hotplug-agent reload, the systemd unit's ExecReload). A configuration it refuses is the
	// response's Error, and the running one stays.
	OpReload = "reload"
)

// The kinds of target.
const (
	KindCPU          = "cpu"           // a logical CPU: id is its number
	KindMemory       = "memory"        // a memory block: id is its index
	KindMemoryDevice = "memory-device" // a whole memory device (a DIMM): id is its ACPI name
)

// The per-item responses, as qemu-guest-agent's GuestMemoryBlockResponseType names them.
const (
	Success      = "success"
	NotFound     = "not-found"
	NotSupported = "operation-not-supported"
	Failed       = "operation-failed"
)

// MaxTargets bounds the targets of one request.
const MaxTargets = 65536

// maxRequestBytes bounds the size of one request.
const maxRequestBytes = 4 << 20

// MaxTimeout bounds Request.TimeoutMS.
const MaxTimeout = 30 * 24 * time.Hour

// Request asks for Op on each of Targets, in order.
type Request struct {
	Op      string   `json:"op"`
	Targets []Target `json:"targets"`
	// Progress asks for a progress line (a Response with only Progress set) for each block of
	// a memory device as it is done, before the response.
	Progress bool `json:"progress,omitempty"`
	// TimeoutMS bounds the request on the agent's side, in milliseconds, up to MaxTimeout; 0
	// is no bound. When it passes, the item in progress stops as a veto would stop it and the
	// items not begun fail. A memory block the kernel is taking offline is stopped there (the
	// kernel leaves it online); other changes the kernel is making are let finish.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// Timeout returns TimeoutMS as a duration; 0 for none.
func (r Request) Timeout() time.Duration { return time.Duration(r.TimeoutMS) * time.Millisecond }

// CancelMessage is what a client sends after its request to cancel it: {"cancel":true}.
type CancelMessage struct {
	Cancel bool `json:"cancel"`
}

// Why a request was cancelled: context.Cause of the handler's context.
var (
	// ErrCancelled: the client sent a CancelMessage.
	ErrCancelled = errors.New("cancelled by the client")
	// ErrClientGone: the client closed its connection, or stopped reading the progress lines.
	ErrClientGone = errors.New("cancelled: the client went away")
	// ErrStopping: the agent is shutting down.
	ErrStopping = errors.New("cancelled: the agent is stopping")
)

// TimeoutError is the cause of a request whose deadline (Request.TimeoutMS) passed. It is
// context.DeadlineExceeded for errors.Is.
type TimeoutError struct{ After time.Duration }

func (e *TimeoutError) Error() string { return "timed out after " + e.After.String() }

// Is reports whether target is context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Target is one CPU, memory block or memory device.
type Target struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// String returns "cpu 1", "memory 0", "memory-device PNP0C80:00": as the command line takes it.
func (t Target) String() string { return t.Kind + " " + t.ID }

// Number returns the CPU number or block index of a cpu or memory target.
func (t Target) Number() (int, error) {
	// Decimal digits alone, as sysfs names them: no sign, no leading zero.
	if t.ID == "" || len(t.ID) > 9 || (len(t.ID) > 1 && t.ID[0] == '0') || strings.TrimLeft(t.ID, "0123456789") != "" {
		return 0, fmt.Errorf("%s: want a number", t)
	}
	n, err := strconv.Atoi(t.ID)
	if err != nil {
		return 0, fmt.Errorf("%s: want a number", t)
	}
	return n, nil
}

// Validate checks the request: a known op; for online and offline 1 to MaxTargets targets of
// known kinds, numbers for CPUs and blocks, for reload none. The error is one line naming the bad part.
func (r Request) Validate() error {
	if r.Op == OpReload {
		if len(r.Targets) > 0 {
			return errors.New("reload takes no targets")
		}
		return nil
	}
	if r.Op != OpOnline && r.Op != OpOffline {
		return fmt.Errorf("op %q: want online, offline or reload", r.Op)
	}
	if len(r.Targets) == 0 {
		return errors.New("no targets")
	}
	if len(r.Targets) > MaxTargets {
		return fmt.Errorf("%d targets: at most %d in one request", len(r.Targets), MaxTargets)
	}
	if r.TimeoutMS < 0 || r.TimeoutMS > MaxTimeout.Milliseconds() {
		return fmt.Errorf("timeout_ms %d: want 0 (none) to %d", r.TimeoutMS, MaxTimeout.Milliseconds())
	}
	for _, t := range r.Targets {
		switch t.Kind {
		case KindCPU, KindMemory:
			if _, err := t.Number(); err != nil {
				return err
			}
		case KindMemoryDevice:
			if t.ID == "" || len(t.ID) > 64 {
				return fmt.Errorf("%s: want a device id like PNP0C80:00", t)
			}
		default:
			return fmt.Errorf("target kind %q: want cpu, memory or memory-device", t.Kind)
		}
	}
	return nil
}

// Response answers a Request: Error when the request as a whole was refused (not root, bad
// request), else one result per target, in order. A progress line is a Response with only
// Progress set.
type Response struct {
	Error   string   `json:"error,omitempty"`
	Results []Result `json:"results,omitempty"`
	// FreedBytes is the memory the request took offline, the sum of the results'.
	FreedBytes uint64 `json:"freed_bytes,omitempty"`
	// Progress, in a progress line, is one block of a memory device done.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is one block of a memory device taken offline or online, or brought back online
// after the device failed (Rollback), as the agent goes (Request.Progress).
type Progress struct {
	// Device is the memory device's id (the target's ID).
	Device string `json:"device"`
	// Block is the memory block's index.
	Block int `json:"block"`
	// State is what the block was asked to become: "offline" or "online".
	State string `json:"state"`
	// Rollback is set for a block brought back online because the device could not go whole.
	Rollback bool `json:"rollback,omitempty"`
	// Done is how many of the device's blocks are in the state asked for so far (fewer again as
	// a rollback goes), of Of.
	Done int `json:"done"`
	Of   int `json:"of"`
	// FreedBytes is the memory of the device's blocks offline by this request so far.
	FreedBytes uint64 `json:"freed_bytes"`
	// Result is the block's: Success, or Failed with Error (and the kernel's errno).
	Result    string `json:"result"`
	Error     string `json:"error,omitempty"`
	ErrorCode int    `json:"error_code,omitempty"`
	ErrorName string `json:"error_name,omitempty"`
	// ElapsedMS is how long the block took, in milliseconds.
	ElapsedMS int64 `json:"elapsed_ms"`
}

// Result is the outcome for one target.
type Result struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	// Response is Success, NotFound, NotSupported or Failed.
	Response string `json:"response"`
	// Error says why, for the responses other than Success.
	Error string `json:"error,omitempty"`
	// ErrorCode is the kernel's errno when it refused (EBUSY is 16), as qemu-guest-agent's
	// error-code; ErrorName is its name.
	ErrorCode int    `json:"error_code,omitempty"`
	ErrorName string `json:"error_name,omitempty"`
	// VetoedBy names the registration that vetoed.
	VetoedBy string `json:"vetoed_by,omitempty"`
	// FreedBytes is the memory this item took offline (0 for a block that was offline already),
	// and FreedBlocks how many blocks that was.
	FreedBytes  uint64 `json:"freed_bytes,omitempty"`
	FreedBlocks int    `json:"freed_blocks,omitempty"`
	// Stopped, for an item that failed or was not begun because the request ended early, says
	// why: StoppedCancelled, StoppedTimeout, StoppedClientGone or StoppedAgentStopping.
	Stopped string `json:"stopped,omitempty"`
}

// The values of Result.Stopped.
const (
	StoppedCancelled     = "cancelled"
	StoppedTimeout       = "timeout"
	StoppedClientGone    = "client-gone"
	StoppedAgentStopping = "agent-stopping"
)

// stoppedBy names the cause of a request's early end for Result.Stopped.
func stoppedBy(cause error) string {
	switch {
	case errors.Is(cause, ErrCancelled):
		return StoppedCancelled
	case errors.Is(cause, context.DeadlineExceeded):
		return StoppedTimeout
	case errors.Is(cause, ErrClientGone):
		return StoppedClientGone
	case errors.Is(cause, ErrStopping):
		return StoppedAgentStopping
	}
	return StoppedCancelled
}

// NewResult builds the result for t from a response and its error: the kernel's errno and the
// vetoing registration are taken from err when it wraps them.
func NewResult(t Target, response string, err error) Result {
	r := Result{Kind: t.Kind, ID: t.ID, Response: response}
	if err == nil {
		return r
	}
	r.Error = err.Error()
	if veto, ok := errors.AsType[*notify.VetoError](err); ok {
		r.VetoedBy = veto.Owner
	} else if errno, ok := errors.AsType[syscall.Errno](err); ok {
		r.ErrorCode, r.ErrorName = int(errno), errnoName(errno)
	}
	return r
}

// NewProgress builds the progress line of a block of device from its response and error, as
// NewResult does; the caller sets the counts.
func NewProgress(device string, block int, state, response string, err error) Progress {
	r := NewResult(Target{}, response, err)
	return Progress{Device: device, Block: block, State: state, Result: response, Error: r.Error, ErrorCode: r.ErrorCode, ErrorName: r.ErrorName}
}

// Peer is the process at the other end of a connection, from SO_PEERCRED.
type Peer struct {
	UID int
	GID int
	PID int
}

// RootOnly is the default authorisation: uid 0 only.
func RootOnly(p Peer) error {
	if p.UID != 0 {
		return fmt.Errorf("permission denied: uid %d is not root", p.UID)
	}
	return nil
}

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
package control

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"

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

// Request asks for Op on each of Targets, in order.
type Request struct {
	Op      string   `json:"op"`
	Targets []Target `json:"targets"`
}

// Target is one CPU, memory block or memory device.
type Target struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// String returns "cpu 1", "memory 0", "memory-device PNP0C80:00": as the command line takes it.
func (t Target) String() string { return t.Kind + " " + t.ID }

// Number returns the CPU number or block index of a cpu or memory target.
func (t Target) Number() (int, error) {
	if t.ID == "" || len(t.ID) > 9 || (len(t.ID) > 1 && t.ID[0] == '0') {
		return 0, fmt.Errorf("%s: want a number", t)
	}
	n, err := strconv.Atoi(t.ID)
	if err != nil || n < 0 {
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
// request), else one result per target, in order.
type Response struct {
	Error   string   `json:"error,omitempty"`
	Results []Result `json:"results,omitempty"`
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

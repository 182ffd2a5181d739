package online

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
	"github.com/hotplug-agent/hotplug-agent/sysfs"
)

// Resource names one CPU or memory block for a request.
type Resource struct {
	// Memory is true for a memory block, false for a CPU.
	Memory bool
	// Number is the CPU number or the block index.
	Number int
}

// String returns "cpu N" or "memory N", as the command line names it. It does not block.
func (r Resource) String() string {
	if r.Memory {
		return "memory " + strconv.Itoa(r.Number)
	}
	return "cpu " + strconv.Itoa(r.Number)
}

// Outcome is the result of a request for one resource, named as qemu-guest-agent names the
// responses of guest-set-memory-blocks.
type Outcome string

// The outcomes of a request.
const (
	// Success: the resource is in the state asked for (it may have been already).
	Success Outcome = "success"
	// NotFound: there is no such CPU or memory block.
	NotFound Outcome = "not-found"
	// NotSupported: the kernel cannot change this one (a CPU without an online file, such as
	// cpu0 on most machines).
	NotSupported Outcome = "operation-not-supported"
	// Failed: a participant vetoed (the error is a *notify.VetoError), or the kernel refused (the
	// error wraps its errno, such as EBUSY for a memory block that cannot be offlined).
	Failed Outcome = "operation-failed"
)

// Result is the outcome of a request for one resource.
type Result struct {
	Outcome Outcome
	// Err says why, for NotSupported and Failed.
	Err error
	// Changed is set when the request changed the resource's state (false when it was in the
	// state asked for already).
	Changed bool
}

// Request brings r online (online true) or takes it offline, on behalf of req (from the control
// socket). Online is a two-phase add with cause "request": AddStart to the two-phase
// registrations, which may veto, then the write, then AddComplete or AddFailure with the kernel's
// error. Offline is a removal: query-remove to the registrations for r's symbolic link, which may
// veto, then the write, then remove-complete, or remove-cancelled with the kernel's error. The
// ordinary notification of the change follows. A resource already in the state asked for is a
// success and nobody is told anything. There are no retries: the kernel's answer is the result.
//
// Request blocks until the change and its notifications to the participants are done (or ctx
// ends while it waits for another change, or while the kernel takes a memory block offline: the
// kernel then stops and leaves the block online, and the result is Failed with an error wrapping
// context.Cause(ctx)) and is safe for concurrent use. It does not wait for
// the online policy's retries: when the change in progress is waiting to retry a failed online,
// or begins to while Request waits for it, the result is Failed with an error wrapping ErrBusy
// that says what is being retried.
func (o *Onliner) Request(ctx context.Context, r Resource, online bool, req notify.Requester) Result {
	if r.Number < 0 {
		return Result{Outcome: NotFound, Err: fmt.Errorf("%s: no such %s", r, kindName(r))}
	}
	if err := o.lockForRequest(ctx); err != nil {
		return Result{Outcome: Failed, Err: fmt.Errorf("%s: waiting for the change in progress: %w", r, err)}
	}
	defer o.unlock()
	iface, isOnline, err := o.read(r.Memory, r.Number)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Result{Outcome: NotFound, Err: fmt.Errorf("%s: no such %s", r, kindName(r))}
	case err != nil:
		return Result{Outcome: Failed, Err: err}
	case isOnline == online:
		o.log.Info("request: nothing to do", "device", r.String(), "online", online, "uid", req.UID, "pid", req.PID)
		return Result{Outcome: Success}
	}
	if !r.Memory {
		if c, err := o.fs.CPU(r.Number); err == nil && !c.Hotpluggable {
			return Result{Outcome: NotSupported, Err: fmt.Errorf("%s has no online file: the kernel cannot take it offline or online", r)}
		}
	}
	if online {
		return o.requestOnline(ctx, r, iface)
	}
	return o.requestOffline(ctx, r, iface, req)
}

func (o *Onliner) requestOnline(ctx context.Context, r Resource, iface notify.Interface) Result {
	var finish func(error)
	if o.changes != nil {
		add, err := o.changes.Begin(ctx, iface, 0, time.Time{}, notify.CauseRequest)
		if err != nil {
			o.log.Warn("request: online vetoed; left offline", "device", r.String(), "err", err)
			return Result{Outcome: Failed, Err: vetoOr(err)}
		}
		finish = func(err error) {
			if err != nil {
				add.Fail(err)
			} else {
				add.Complete()
			}
		}
	}
	return o.change(r, iface, true, finish, func() error { return o.write(r, true) })
}

func (o *Onliner) requestOffline(ctx context.Context, r Resource, iface notify.Interface, req notify.Requester) Result {
	var finish func(error)
	if o.targets != nil {
		rm, err := o.targets.QueryRemove(iface, req)
		if err != nil {
			o.log.Warn("request: removal vetoed; left online", "device", r.String(), "err", err)
			return Result{Outcome: Failed, Err: vetoOr(err)}
		}
		finish = func(err error) {
			if err != nil {
				rm.Cancel(err)
			} else {
				rm.Complete()
			}
		}
	}
	return o.change(r, iface, false, finish, func() error {
		if r.Memory {
			return o.fs.OfflineMemoryBlock(ctx, r.Number)
		}
		return o.write(r, false)
	})
}

// change makes the requested change of r (iface) to online (up) or offline, which its
// participants have agreed to: it holds back iface's notifications at the gate, calls do, tells
// the participants how it went (finish; nil without any), lets the notifications through and
// says in the log what happened. It blocks until do returns.
func (o *Onliner) change(r Resource, iface notify.Interface, up bool, finish func(error), do func() error) Result {
	o.gate.hold(iface.SymbolicLink, up)
	err := do()
	if finish != nil {
		finish(err)
	}
	o.gate.release(iface.SymbolicLink, err == nil)
	switch {
	case err != nil && up:
		o.log.Warn("request: the kernel refused to bring it online", "device", r.String(), "err", err)
	case err != nil:
		o.log.Warn("request: the kernel refused to take it offline", "device", r.String(), "err", err)
	case up:
		o.log.Info("request: brought online", "device", r.String())
	default:
		o.log.Info("request: taken offline", "device", r.String())
	}
	if err != nil {
		return Result{Outcome: Failed, Err: err}
	}
	return Result{Outcome: Success, Changed: true}
}

// write sets r's state. A memory block is onlined as the policy says when it names a zone type,
// in the zone the planner decides under the policy Planned, else as "online" (the kernel picks
// the zone).
func (o *Onliner) write(r Resource, online bool) error {
	if !r.Memory {
		return o.fs.SetCPUOnline(r.Number, online)
	}
	state := "offline"
	var plan *planned
	if online {
		state = Online
		switch m := o.p.Load().Memory; {
		case slices.Contains(sysfs.MemoryOnlineTypes, m):
			state = m
		case m == Planned:
			node := -1
			if b, err := o.fs.MemoryBlockBasics(r.Number); err == nil {
				node = b.Node
			}
			plan = o.plan(&planRound{}, o.p.Load().MovableRatio, r.Number, node)
			state = plan.zone.State()
		}
	}
	err := o.fs.SetMemoryState(r.Number, state)
	if err == nil && online {
		o.onlinedByUs(r.Number)
		if plan != nil {
			o.log.Info("request: zone planned", append([]any{"device", r.String()}, o.planDone(plan)...)...)
		}
	}
	return err
}

// vetoOr returns the *notify.VetoError in err (what the requester needs to read: who said no and
// why), or err.
func vetoOr(err error) error {
	if v, ok := errors.AsType[*notify.VetoError](err); ok {
		return v
	}
	return err
}

func kindName(r Resource) string {
	if r.Memory {
		return "memory block"
	}
	return "CPU"
}

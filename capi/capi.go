//go:build cgo

package main

/*
#include <stdlib.h>
#include "hotplug.h"
#include "registration.h"
*/
import "C"

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/client"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// creg is the Go side of one C registration: a client of its own (one stream per C
// registration: each names its agent's URL) and its registration.
type creg struct {
	h   *C.hotplug_registration // C memory: the callback and its context, and the handle's identity
	c   *client.Client
	r   *client.Registration // set before set is closed
	set chan struct{}
}

// registration returns cr's registration, waiting for hotplug_register to record it (a callback
// may run, and unregister, before hotplug_register has returned).
func (cr *creg) registration() *client.Registration {
	<-cr.set
	return cr.r
}

var (
	mu   sync.Mutex
	regs = map[*C.hotplug_registration]*creg{}
)

func lookup(h *C.hotplug_registration) *creg {
	mu.Lock()
	defer mu.Unlock()
	return regs[h]
}

// logger is where the library logs: nowhere, unless HOTPLUG_LOG names a level (debug, info,
// warn, error); then stderr, in logfmt.
var logger = sync.OnceValue(func() *slog.Logger {
	v := strings.TrimSpace(os.Getenv("HOTPLUG_LOG"))
	if v == "" {
		return nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		fmt.Fprintf(os.Stderr, "libhotplug: HOTPLUG_LOG=%q: want debug, info, warn or error; logging at warn\n", v)
		l = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})).With("lib", "hotplug")
})

//export hotplug_register
func hotplug_register(url *C.hotplug_const_char, class *C.hotplug_const_char, flags C.int, cb C.hotplug_callback, context unsafe.Pointer, out **C.hotplug_registration) C.int {
	if url == nil || cb == nil || out == nil {
		return C.HOTPLUG_E_INVALID_ARGUMENT
	}
	filter := client.Filter{Class: notify.AllClasses}
	if class != nil {
		f, err := client.ParseFilter(C.GoString((*C.char)(class)))
		if err != nil || C.GoString((*C.char)(class)) == "" {
			return C.HOTPLUG_E_INVALID_CLASS
		}
		filter = f
	}
	if flags&^(C.HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES|C.HOTPLUG_FLAG_MEMORY_DEVICES) != 0 {
		return C.HOTPLUG_E_INVALID_FLAGS
	}
	devices := flags&C.HOTPLUG_FLAG_MEMORY_DEVICES != 0
	if devices && filter.Class != notify.AllClasses && filter.Class != notify.GUIDDeviceMemory {
		return C.HOTPLUG_E_INVALID_CLASS
	}
	flags &^= C.HOTPLUG_FLAG_MEMORY_DEVICES // the client follows the devices' stream instead
	c, err := client.New(C.GoString((*C.char)(url)), client.Options{Logger: logger(), MemoryDevices: devices})
	if err != nil {
		return C.HOTPLUG_E_INVALID_URL
	}
	h := (*C.hotplug_registration)(C.calloc(1, C.sizeof_struct_hotplug_registration))
	if h == nil {
		c.Close()
		return C.HOTPLUG_E_INTERNAL
	}
	h.cb, h.context = cb, context
	cr := &creg{h: h, c: c, set: make(chan struct{})}
	// Known before Register: a callback may unregister its registration at once.
	mu.Lock()
	regs[h] = cr
	mu.Unlock()
	r, err := c.Register(filter, notify.Flags(flags), cr.deliver)
	if err != nil {
		mu.Lock()
		delete(regs, h)
		mu.Unlock()
		close(cr.set)
		c.Close()
		C.free(unsafe.Pointer(h))
		return C.HOTPLUG_E_INTERNAL
	}
	cr.r = r
	close(cr.set)
	*out = h
	return C.HOTPLUG_OK
}

//export hotplug_wait_ready
func hotplug_wait_ready(h *C.hotplug_registration, timeoutMS C.int) C.int {
	cr := lookup(h)
	if cr == nil {
		return C.HOTPLUG_E_NOT_REGISTERED
	}
	ctx := context.Background()
	if timeoutMS >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeoutMS)*time.Millisecond)
		defer cancel()
	}
	switch err := cr.registration().WaitReady(ctx); {
	case err == nil:
		return C.HOTPLUG_OK
	case errors.Is(err, client.ErrUnregistered):
		return C.HOTPLUG_E_NOT_REGISTERED
	default:
		return C.HOTPLUG_E_TIMEOUT
	}
}

//export hotplug_state
func hotplug_state(h *C.hotplug_registration) C.int {
	cr := lookup(h)
	if cr == nil {
		return -C.HOTPLUG_E_NOT_REGISTERED
	}
	switch cr.c.State() {
	case client.Connected:
		return C.HOTPLUG_STATE_CONNECTED
	case client.Backoff:
		return C.HOTPLUG_STATE_BACKOFF
	case client.Closed:
		return C.HOTPLUG_STATE_CLOSED
	}
	return C.HOTPLUG_STATE_CONNECTING
}

//export hotplug_unregister
func hotplug_unregister(h *C.hotplug_registration) C.int {
	mu.Lock()
	cr := regs[h]
	delete(regs, h)
	mu.Unlock()
	if cr == nil {
		return C.HOTPLUG_E_NOT_REGISTERED
	}
	// The registration first, waiting for its callback in flight (not from inside it), then
	// the client, which has no other registration.
	if err := cr.c.UnregisterEx(context.Background(), cr.registration()); err != nil {
		logf(slog.LevelWarn, "unregister", "err", err)
	}
	if err := cr.c.Close(); err != nil {
		logf(slog.LevelWarn, "close client", "err", err)
	}
	C.free(unsafe.Pointer(h))
	return C.HOTPLUG_OK
}

func logf(level slog.Level, msg string, args ...any) {
	if l := logger(); l != nil {
		l.Log(context.Background(), level, msg, args...)
	}
}

// deliver is the Go callback of a C registration: it lays n out as a hotplug_notification in C
// memory, calls the C callback, and frees it all.
func (cr *creg) deliver(_ context.Context, n notify.Notification) error {
	cn := (*C.hotplug_notification)(C.calloc(1, C.sizeof_hotplug_notification))
	if cn == nil {
		return errors.New("out of memory for the notification")
	}
	defer C.free(unsafe.Pointer(cn))
	var strs []*C.char
	cstr := func(s string) *C.char {
		p := C.CString(s)
		strs = append(strs, p)
		return p
	}
	defer func() {
		for _, p := range strs {
			C.free(unsafe.Pointer(p))
		}
	}()
	i := n.Interface
	cn.struct_size = C.uint32_t(C.sizeof_hotplug_notification)
	cn.version = C.uint16_t(n.Version)
	cn.action = C.HOTPLUG_ACTION_REMOVAL
	if n.IsArrival() {
		cn.action = C.HOTPLUG_ACTION_ARRIVAL
	}
	setGUID(&cn.event, n.Event)
	setGUID(&cn.interface_class_guid, n.InterfaceClassGUID)
	cn.symbolic_link = cstr(n.SymbolicLinkName)
	cn.interface_class = cstr(notify.ClassName(n.InterfaceClassGUID))
	cn.cpu, cn.memory_block = -1, -1
	switch n.InterfaceClassGUID {
	case notify.GUIDDeviceProcessor:
		cn.cpu = C.int32_t(i.Number)
	case notify.GUIDDeviceMemory:
		if !i.IsMemoryDevice() {
			cn.memory_block = C.int64_t(i.Number)
		}
		cn.phys_start = C.uint64_t(i.PhysStart)
		cn.size_bytes = C.uint64_t(i.Size)
	}
	cn.memory_device = cstr(i.Device)
	cn.memory_blocks = cstr(i.Blocks)
	cn.node = C.int32_t(i.Node)
	cn.state = cstr(i.State)
	cn.zones = cstr(i.Zones)
	cn.seqnum = C.uint64_t(n.Seqnum)
	cn.id = C.uint64_t(n.ID)
	cn.cause = cstr(string(n.Cause))
	if !n.ReadAt.IsZero() {
		cn.read_at_unix_nano = C.int64_t(n.ReadAt.UnixNano())
	}
	if rc := callC(cr.h, cn); rc != 0 {
		return fmt.Errorf("C callback returned %d", rc)
	}
	return nil
}

// setGUID writes u into g in the Windows layout: the first three groups as numbers, the rest
// as bytes.
func setGUID(g *C.hotplug_guid, u uuid.UUID) {
	g.data1 = C.uint32_t(binary.BigEndian.Uint32(u[0:4]))
	g.data2 = C.uint16_t(binary.BigEndian.Uint16(u[4:6]))
	g.data3 = C.uint16_t(binary.BigEndian.Uint16(u[6:8]))
	for k := range 8 {
		g.data4[k] = C.uint8_t(u[8+k])
	}
}

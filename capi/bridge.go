//go:build cgo

package main

/*
#include <stdlib.h>
#include "hotplug.h"
#include "registration.h"

// hotplug_bridge_call calls reg's callback: Go cannot call a C function pointer itself.
static int hotplug_bridge_call(hotplug_registration *reg, const hotplug_notification *n)
{
	return reg->cb(reg, reg->context, n);
}

const char *hotplug_strerror(int code)
{
	switch (code) {
	case HOTPLUG_OK: return "success";
	case HOTPLUG_E_INVALID_ARGUMENT: return "invalid argument: a NULL url, callback or out pointer";
	case HOTPLUG_E_INVALID_URL: return "invalid agent URL: want http://host:port or https://host:port";
	case HOTPLUG_E_INVALID_CLASS: return "invalid interface class: want NULL, \"processor\", \"memory\" or a GUID (NULL or \"memory\" with HOTPLUG_FLAG_MEMORY_DEVICES)";
	case HOTPLUG_E_INVALID_FLAGS: return "invalid flags: want HOTPLUG_FLAG_INCLUDE_EXISTING_INTERFACES and/or HOTPLUG_FLAG_MEMORY_DEVICES";
	case HOTPLUG_E_NOT_REGISTERED: return "not registered: the handle was unregistered already or is not one";
	case HOTPLUG_E_TIMEOUT: return "timed out: the agent was not reached in time";
	case HOTPLUG_E_INTERNAL: return "internal error";
	}
	return "unknown result code";
}
*/
import "C"

// callC runs the C callback of reg for n and returns its result.
func callC(reg *C.hotplug_registration, n *C.hotplug_notification) int {
	return int(C.hotplug_bridge_call(reg, n))
}

// Command capi is the C interface of the hotplug-agent client, built as a shared library:
//
//	go build -buildmode=c-shared -o libhotplug.so ./capi
//
// C programs include hotplug.h (in this directory, written by hand) and link with -lhotplug:
// hotplug_register, hotplug_wait_ready, hotplug_state and hotplug_unregister, modelled on
// CM_Register_Notification and CM_Unregister_Notification, over the Go client in
// github.com/hotplug-agent/hotplug-agent/client. Without cgo the package builds to nothing.
package main

func main() {}

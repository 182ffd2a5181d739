package web

import (
	"testing"
	"time"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// BenchmarkHubDeliver is the event stream's cost per notification once its history is full (the
// steady state of an agent that has published more than --web.stream-history notifications).
func BenchmarkHubDeliver(b *testing.B) {
	reg := notify.NewRegistry(notify.Options{})
	reg.Seed([]notify.Interface{cpu(0), cpu(1)})
	h, err := newHub(reg, 4096, func() {})
	if err != nil {
		b.Fatal(err)
	}
	n := notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, cpu(1), 1, time.Now(), notify.CauseUevent)
	for i := range 4096 {
		n.ID = uint64(i + 1)
		h.deliver(b.Context(), n, nil)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		n.ID = uint64(4097 + i)
		h.deliver(b.Context(), n, nil)
	}
}

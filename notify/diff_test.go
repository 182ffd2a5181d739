package notify

import (
	"time"

	"github.com/hotplug-agent/hotplug-agent/internal/dispatch"
)

// diff returns the removals then the arrivals (CauseResync, ID 0, ReadAt now) that take view to
// active: an interface whose details differ gets a removal and an arrival. Each half is in
// Interface.Less order.
func diff(view, active map[string]Interface, now time.Time) []Notification {
	var out []Notification
	for _, n := range dispatch.Resync(newSpec(0), view, active, nil) {
		n.ReadAt = now
		out = append(out, n.Notification)
	}
	return out
}

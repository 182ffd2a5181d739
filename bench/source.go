package bench

import (
	"context"
	"strings"

	"github.com/hotplug-agent/hotplug-agent/udev"
)

// TagKey is the synthetic uevent argument that says which consumer a benchmark event is for:
// writing "online <uuid> BENCH=inproc" to a device's uevent file makes the kernel add
// SYNTH_ARG_BENCH=inproc to the uevent.
const TagKey = "SYNTH_ARG_BENCH"

// Unsynthesize returns ev as the kernel would have sent it for a real transition: the same
// datagram without SYNTH_UUID and the SYNTH_ARG_ keys, parsed again, with ev's ReadAt. The
// agent announces nothing for a synthetic uevent (it changes nothing in the machine); a
// benchmark that needs the agent's whole path, up to a callback, for a synthetic uevent feeds it
// this instead.
func Unsynthesize(ev udev.Event) (udev.Event, error) {
	b := make([]byte, 0, 256)
	b = append(b, ev.Action...)
	b = append(b, '@')
	b = append(b, ev.DevPath...)
	b = append(b, 0)
	for k, v := range ev.All() {
		if k == "SYNTH_UUID" || strings.HasPrefix(k, "SYNTH_ARG_") {
			continue
		}
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, v...)
		b = append(b, 0)
	}
	out, err := udev.Parse(b)
	if err != nil {
		return udev.Event{}, err
	}
	out.ReadAt = ev.ReadAt
	return out, nil
}

// TaggedSource is an agent.Source over a real uevent socket that passes every uevent on as it
// came, except those whose SYNTH_ARG_BENCH is Tag: it passes those on unsynthesized, so that the
// agent takes them for real transitions and runs its callbacks for them. What it adds to the
// agent's path is one extra parse of the tagged events (BenchmarkUnsynthesize measures it).
type TaggedSource struct {
	*udev.Conn
	Tag string
}

// Read returns the next uevent, unsynthesized when it carries the source's tag.
func (s TaggedSource) Read(ctx context.Context) (udev.Event, error) {
	ev, err := s.Conn.Read(ctx)
	if err != nil {
		return ev, err
	}
	return s.untag(ev)
}

// ReadQueued is udev.Conn's, with the tagged uevents unsynthesized as by Read.
func (s TaggedSource) ReadQueued() (udev.Event, bool, error) {
	ev, ok, err := s.Conn.ReadQueued()
	if err != nil || !ok {
		return ev, ok, err
	}
	ev, err = s.untag(ev)
	return ev, err == nil, err
}

// untag returns ev unsynthesized when it carries the source's tag, else ev.
func (s TaggedSource) untag(ev udev.Event) (udev.Event, error) {
	if v, ok := ev.Get(TagKey); !ok || v != s.Tag {
		return ev, nil
	}
	return Unsynthesize(ev)
}

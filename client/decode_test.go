package client

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// TestDecodeRoundTrip: what the agent marshals decodes back to the same notification.
func TestDecodeRoundTrip(t *testing.T) {
	other := uuid.MustParse("0f0e0d0c-0b0a-0908-0706-050403020100")
	readAt := time.Date(2026, 11, 21, 23, 40, 1, 123456789, time.UTC)
	for _, n := range []notify.Notification{
		notify.NewNotification(notify.GUIDDeviceInterfaceArrival, cpuIface(1), 817, readAt, notify.CauseUevent),
		notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, blockIface(33), 0, readAt, notify.CauseResync),
		notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{ClassGUID: notify.GUIDDeviceProcessor,
			SymbolicLink: "/sys/devices/system/cpu/cpu0", Number: 0, Node: -1}, 1, readAt, notify.CauseExisting),
		notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, notify.Interface{ClassGUID: notify.GUIDDeviceMemory,
			SymbolicLink: "/sys/devices/system/memory/memory0", Node: 3, State: "offline", Zones: "Normal Movable"}, 5, readAt, notify.CauseStartup),
		notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{ClassGUID: other, SymbolicLink: "/x/y", Node: -1}, 0, time.Time{}, ""),
		// A memory device at 128 TiB: block numbers are not bounded as CPU numbers are.
		notify.NewNotification(notify.GUIDDeviceInterfaceArrival, notify.Interface{ClassGUID: notify.GUIDDeviceMemory,
			SymbolicLink: "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:07", Number: 1 << 20, Node: 1, PhysStart: 1 << 47,
			Size: 256 << 20, State: "online", Device: "PNP0C80:07", Blocks: "1048576-1048577"}, 9, readAt, notify.CauseUevent),
	} {
		n.ID = uint64(len(n.SymbolicLinkName))
		b, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeNotification(b)
		if err != nil {
			t.Fatalf("DecodeNotification(%s): %v", b, err)
		}
		if !got.ReadAt.Equal(n.ReadAt) {
			t.Errorf("%s: read_at %v; want %v", b, got.ReadAt, n.ReadAt)
		}
		got.ReadAt = n.ReadAt
		if got != n {
			t.Errorf("%s\n decoded %+v\n    want %+v", b, got, n)
		}
		ib, _ := json.Marshal(n.Interface)
		if i, err := DecodeInterface(ib); err != nil || i != n.Interface {
			t.Errorf("DecodeInterface(%s) = %+v, %v; want %+v", ib, i, err, n.Interface)
		}
	}
}

// TestDecodeRejects: a missing or contradictory field is a one-line error naming it; unknown
// fields are fine.
func TestDecodeRejects(t *testing.T) {
	good := `"version":1,"event":"arrival","event_guid":"cb3a4004-46f0-11d0-b08f-00609713053f","interface_class":"processor","interface_class_guid":"97fadb10-4e33-40ae-359c-8bef029dbdd0","symbolic_link":"/sys/devices/system/cpu/cpu1","cpu":1`
	if _, err := DecodeNotification([]byte(`{` + good + `,"future":{"x":[1]}}`)); err != nil {
		t.Errorf("an unknown field: %v; want it ignored", err)
	}
	for _, tc := range []struct{ json, want string }{
		{``, "unexpected end"},
		{`[]`, "cannot unmarshal array"},
		{`{` + good + `} {}`, "invalid character"},
		{`{` + strings.Replace(good, `"version":1,`, ``, 1) + `}`, "no version"},
		{`{` + strings.Replace(good, `"version":1`, `"version":2`, 1) + `}`, "version 2"},
		{`{` + strings.Replace(good, `"event":"arrival"`, `"event":"removal"`, 1) + `}`, "disagrees with event_guid"},
		{`{` + strings.Replace(good, `"event":"arrival"`, `"event":"surprise"`, 1) + `}`, `event "surprise"`},
		{`{` + strings.Replace(good, `cb3a4004`, `cb3a4006`, 1) + `}`, "event_guid cb3a4006"},
		{`{` + strings.Replace(good, `"symbolic_link":"/sys/devices/system/cpu/cpu1",`, ``, 1) + `}`, "no symbolic_link"},
		{`{` + strings.Replace(good, `"interface_class":"processor"`, `"interface_class":"memory"`, 1) + `}`, `interface_class "memory" disagrees`},
		{`{` + strings.Replace(good, `,"cpu":1`, ``, 1) + `}`, "no cpu"},
		{`{` + strings.Replace(good, `"cpu":1`, `"cpu":-1`, 1) + `}`, "negative number"},
		{`{` + good + `,"memory_block":3}`, "both cpu and memory_block"},
		{`{` + good + `,"node":-2}`, "negative node"},
		{`{` + good + `,"size":1}`, "memory fields"},
		{`{` + strings.Replace(good, `"interface_class_guid":"97fadb10-4e33-40ae-359c-8bef029dbdd0",`, ``, 1) + `,"interface_class":"disk"}`, "interface_class"},
		{`{"version":1,"event":"arrival","symbolic_link":"/a","interface_class_guid":"00000000-0000-0000-0000-000000000000"}`, "nil GUID"},
		{`{"version":1,"event":"arrival","symbolic_link":"/a"}`, "no interface_class_guid"},
		{`{"version":1,"symbolic_link":"/a","interface_class":"memory","memory_block":1}`, "no event"},
		{`{"version":1,"event":"removal","symbolic_link":"/a","interface_class":"memory"}`, "no memory_block"},
		{`{"version":1,"event":"removal","symbolic_link":"/a","interface_class":"0f0e0d0c-0b0a-0908-0706-050403020100","cpu":1}`, "cpu or memory_block given"},
	} {
		_, err := DecodeNotification([]byte(tc.json))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("DecodeNotification(%s): %v; want one line saying %q", tc.json, err, tc.want)
		}
	}
	for _, tc := range []struct{ json, want string }{
		{`{"interfaces":[]}`, "no last_id"},
		{`{"last_id":3}`, "no interfaces"},
		{`{"last_id":3,"interfaces":[{"symbolic_link":"/a"}]}`, "interface 0"},
		{`{"last_id":3,"interfaces":[` + cpuJSON(1) + `,` + cpuJSON(1) + `]}`, "listed twice"},
	} {
		_, _, err := decodeResync([]byte(tc.json))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decodeResync(%s): %v; want %q", tc.json, err, tc.want)
		}
	}
	last, set, err := decodeResync([]byte(`{"last_id":7,"interfaces":[` + cpuJSON(1) + `]}`))
	if err != nil || last != 7 || len(set) != 1 || set[0] != cpuIface(1) {
		t.Errorf("decodeResync: %d %+v %v", last, set, err)
	}
}

func cpuJSON(n int) string {
	b, _ := json.Marshal(cpuIface(n))
	return string(b)
}

// TestSSEParser follows the event stream format: the three line ends, comments, multi-line
// data, fields without a space or a value, and an event cut off at the end (dropped).
func TestSSEParser(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []sseEvent
		end      error
	}{
		{"agent", ": hotplug-agent event stream, class all\nretry: 1000\n\nid: 1\ndata: {}\n\n: keep-alive\n\nevent: resync\nid: 4\ndata: {\"last_id\":4}\n\n",
			[]sseEvent{{data: "{}", hasData: true, id: "1", hasID: true}, {typ: "resync", data: `{"last_id":4}`, hasData: true, id: "4", hasID: true}}, io.EOF},
		{"crlf", "id: 1\r\ndata: a\r\n\r\n", []sseEvent{{data: "a", hasData: true, id: "1", hasID: true}}, io.EOF},
		{"cr", "id: 1\rdata: a\r\r", []sseEvent{{data: "a", hasData: true, id: "1", hasID: true}}, io.EOF},
		{"multi-line data", "data: a\ndata\ndata:b\n\n", []sseEvent{{data: "a\n\nb", hasData: true}}, io.EOF},
		{"id with NUL ignored", "id: 1\x002\ndata: x\n\n", []sseEvent{{data: "x", hasData: true}}, io.EOF},
		{"blank lines only", "\n\n\r\n", nil, io.EOF},
		{"cut inside an event", "id: 1\ndata: {}\n\nid: 2\ndata: {\"id\":2", []sseEvent{{data: "{}", hasData: true, id: "1", hasID: true}}, errTruncated},
		{"cut before the blank line", "id: 2\ndata: {}\n", nil, errTruncated},
		{"cut after a CR", "id: 2\ndata: {}\r", nil, errTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSSEReader(strings.NewReader(tc.in))
			var got []sseEvent
			for {
				ev, err := r.next()
				if err != nil {
					if !errors.Is(err, tc.end) {
						t.Errorf("end: %v; want %v", err, tc.end)
					}
					break
				}
				got = append(got, ev)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("events %+v; want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("event %d: %+v; want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
	// A line longer than the limit is an error, not a crash or an unbounded buffer.
	r := newSSEReader(io.MultiReader(strings.NewReader("data: "), &repeat{b: 'x', n: maxLine + 10}))
	if _, err := r.next(); !errors.Is(err, errLineTooLong) || !strings.Contains(err.Error(), "64 MiB") {
		t.Errorf("an overlong line: %v; want an error naming the limit", err)
	}
}

// TestSSEEventDataIsBounded: the data of one event is bounded as a line is, however many lines
// it comes in: an event of exactly the limit is read, one byte more is an error naming the limit,
// given as soon as the line that goes over it is read (the blank line that would end the event
// never comes).
func TestSSEEventDataIsBounded(t *testing.T) {
	// 64 lines of 1 MiB - 1 bytes, joined by 63 LFs: maxLine - 1 bytes of data.
	lines := repeatedDataLines{value: strings.Repeat("x", 1<<20-1), n: 64}
	l := lines
	ev, err := newSSEReader(io.MultiReader(&l, strings.NewReader("data\n\n"))).next()
	if err != nil || len(ev.data) != maxLine {
		t.Errorf("an event of %d bytes: %d bytes, %v; want it read", maxLine, len(ev.data), err)
	}
	l = lines
	ev, err = newSSEReader(io.MultiReader(&l, strings.NewReader("data: x\n"), &repeat{b: 'y', n: 1 << 40})).next()
	if !errors.Is(err, errEventTooLarge) || !strings.Contains(err.Error(), "64 MiB") {
		t.Errorf("an event of %d bytes: %d bytes, %v; want an error naming the limit", maxLine+2, len(ev.data), err)
	}
}

// repeatedDataLines reads n lines "data: value\n".
type repeatedDataLines struct {
	value string
	n     int
	rest  string // what is left of the current line
}

func (d *repeatedDataLines) Read(p []byte) (int, error) {
	if d.rest == "" {
		if d.n == 0 {
			return 0, io.EOF
		}
		d.n--
		d.rest = "data: " + d.value + "\n"
	}
	k := copy(p, d.rest)
	d.rest = d.rest[k:]
	return k, nil
}

// repeat reads n copies of b.
type repeat struct {
	b byte
	n int
}

func (r *repeat) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = r.b
	}
	r.n -= k
	return k, nil
}

// FuzzDecodeNotification: any input either fails to decode, or decodes to a notification that
// the agent's encoding turns back into itself.
func FuzzDecodeNotification(f *testing.F) {
	for _, n := range []notify.Notification{
		notify.NewNotification(notify.GUIDDeviceInterfaceArrival, cpuIface(1), 817, time.Unix(1, 2).UTC(), notify.CauseUevent),
		notify.NewNotification(notify.GUIDDeviceInterfaceRemoval, blockIface(33), 0, time.Unix(3, 4).UTC(), notify.CauseResync),
	} {
		b, _ := json.Marshal(n)
		f.Add(b)
	}
	f.Add([]byte(`{"version":1,"event":"removal","symbolic_link":"/a","interface_class":"memory","memory_block":1,"node":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := DecodeNotification(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(n)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", n, err)
		}
		m, err := DecodeNotification(again)
		if err != nil {
			t.Fatalf("%s decoded, but its encoding %s does not: %v", b, again, err)
		}
		if !m.ReadAt.Equal(n.ReadAt) {
			t.Fatalf("read_at %v became %v", n.ReadAt, m.ReadAt)
		}
		m.ReadAt = n.ReadAt
		if m != n {
			t.Fatalf("%s: decode, encode, decode gave %+v; want %+v", b, m, n)
		}
	})
}

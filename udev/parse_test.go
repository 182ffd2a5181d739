package udev

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Raw datagrams as the kernel sends them (captured on the test VM, kernel 6.18).
const (
	cpuModalias = "cpu:type:x86,ven0000fam0006mod00CF:feature:,0000,0001,0002,0003,0004,0005,0006,0007,0008,0009,000B,000C,000D,000E,000F,0010,0011,0013,0017,0018,0019,001A,001B,001C,002B,0034,003A,003B,003D,0068,006F,0070,0072,0074,0075,0076,0078,0079,007F,0080,0081,0089,008C,008D,0091,0093,0094,0095,0096,0097,0098,0099,009A,009B,009C,009D,009E,009F,00C0,00C5,00C8,00E1,00EA,00ED,00F3,00FF,0114,0115,0120,0121,0123,0124,0125,0126,0127,0128,0129,012A,012B,012D,0130,0131,0132,0133,0134,0135,0137,0138,013C,013D,013E,013F,0140,0141,0142,0143,0164,0165,016C,016E,017B,01C2,0201,0202,0206,0208,0209,020A,020B,020C,020E,0216,0244,025D,0282,0286,0289,02AB,02AC"

	// A real CPU online (echo 1 > cpu1/online): MODALIAS ends in a literal newline.
	rawCPUOnline = "online@/devices/system/cpu/cpu1\x00ACTION=online\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00MODALIAS=" + cpuModalias + "\n\x00SEQNUM=817\x00"
	// echo online > /sys/devices/system/cpu/cpu1/uevent
	rawCPUOnlineSynth = "online@/devices/system/cpu/cpu1\x00ACTION=online\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00SYNTH_UUID=0\x00MODALIAS=" + cpuModalias + "\n\x00SEQNUM=820\x00"
	rawCPUOffline     = "offline@/devices/system/cpu/cpu1\x00ACTION=offline\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00MODALIAS=" + cpuModalias + "\n\x00SEQNUM=815\x00"
	rawMemoryAdd      = "add@/devices/system/memory/memory40\x00ACTION=add\x00DEVPATH=/devices/system/memory/memory40\x00SUBSYSTEM=memory\x00SEQNUM=1520\x00"
	rawMemoryOnline   = "online@/devices/system/memory/memory40\x00ACTION=online\x00DEVPATH=/devices/system/memory/memory40\x00SUBSYSTEM=memory\x00SEQNUM=1521\x00"
	// echo 'change 11111111-2222-3333-4444-555555555555 FOO=bar X=1' > memory0/uevent
	rawMemoryChangeSynth = "change@/devices/system/memory/memory0\x00ACTION=change\x00DEVPATH=/devices/system/memory/memory0\x00SUBSYSTEM=memory\x00SYNTH_UUID=11111111-2222-3333-4444-555555555555\x00SYNTH_ARG_FOO=bar\x00SYNTH_ARG_X=1\x00SEQNUM=823\x00"
)

// parsed is what a user checks of a parsed event.
type parsed struct {
	Action, DevPath, Subsystem string
	Seqnum                     uint64
	Synthetic                  bool
	Fields                     [][2]string
}

func view(e *Event) parsed {
	p := parsed{Action: e.Action, DevPath: e.DevPath, Subsystem: e.Subsystem, Seqnum: e.Seqnum, Synthetic: e.Synthetic()}
	for k, v := range e.All() {
		p.Fields = append(p.Fields, [2]string{k, v})
	}
	return p
}

func TestParse(t *testing.T) {
	long := strings.Repeat("x", 5000)
	tests := []struct {
		name string
		raw  string
		want parsed
	}{
		{
			name: "cpu online, MODALIAS newline trimmed",
			raw:  rawCPUOnline,
			want: parsed{Action: "online", DevPath: "/devices/system/cpu/cpu1", Subsystem: "cpu", Seqnum: 817, Fields: [][2]string{
				{"ACTION", "online"}, {"DEVPATH", "/devices/system/cpu/cpu1"}, {"SUBSYSTEM", "cpu"}, {"MODALIAS", cpuModalias}, {"SEQNUM", "817"},
			}},
		},
		{
			name: "cpu online, synthetic with SYNTH_UUID=0",
			raw:  rawCPUOnlineSynth,
			want: parsed{Action: "online", DevPath: "/devices/system/cpu/cpu1", Subsystem: "cpu", Seqnum: 820, Synthetic: true, Fields: [][2]string{
				{"ACTION", "online"}, {"DEVPATH", "/devices/system/cpu/cpu1"}, {"SUBSYSTEM", "cpu"}, {"SYNTH_UUID", "0"}, {"MODALIAS", cpuModalias}, {"SEQNUM", "820"},
			}},
		},
		{
			name: "cpu offline",
			raw:  rawCPUOffline,
			want: parsed{Action: "offline", DevPath: "/devices/system/cpu/cpu1", Subsystem: "cpu", Seqnum: 815, Fields: [][2]string{
				{"ACTION", "offline"}, {"DEVPATH", "/devices/system/cpu/cpu1"}, {"SUBSYSTEM", "cpu"}, {"MODALIAS", cpuModalias}, {"SEQNUM", "815"},
			}},
		},
		{
			name: "memory add",
			raw:  rawMemoryAdd,
			want: parsed{Action: "add", DevPath: "/devices/system/memory/memory40", Subsystem: "memory", Seqnum: 1520, Fields: [][2]string{
				{"ACTION", "add"}, {"DEVPATH", "/devices/system/memory/memory40"}, {"SUBSYSTEM", "memory"}, {"SEQNUM", "1520"},
			}},
		},
		{
			name: "memory online",
			raw:  rawMemoryOnline,
			want: parsed{Action: "online", DevPath: "/devices/system/memory/memory40", Subsystem: "memory", Seqnum: 1521, Fields: [][2]string{
				{"ACTION", "online"}, {"DEVPATH", "/devices/system/memory/memory40"}, {"SUBSYSTEM", "memory"}, {"SEQNUM", "1521"},
			}},
		},
		{
			name: "memory change, synthetic with UUID and arguments",
			raw:  rawMemoryChangeSynth,
			want: parsed{Action: "change", DevPath: "/devices/system/memory/memory0", Subsystem: "memory", Seqnum: 823, Synthetic: true, Fields: [][2]string{
				{"ACTION", "change"}, {"DEVPATH", "/devices/system/memory/memory0"}, {"SUBSYSTEM", "memory"},
				{"SYNTH_UUID", "11111111-2222-3333-4444-555555555555"}, {"SYNTH_ARG_FOO", "bar"}, {"SYNTH_ARG_X", "1"}, {"SEQNUM", "823"},
			}},
		},
		{
			name: "values containing '=' split at the first '='",
			raw:  "change@/devices/virtual/misc/x\x00ACTION=change\x00DEVPATH=/devices/virtual/misc/x\x00SUBSYSTEM=misc\x00PARAMS=a=b==c\x00EMPTY=\x00EQ==\x00SEQNUM=5\x00",
			want: parsed{Action: "change", DevPath: "/devices/virtual/misc/x", Subsystem: "misc", Seqnum: 5, Fields: [][2]string{
				{"ACTION", "change"}, {"DEVPATH", "/devices/virtual/misc/x"}, {"SUBSYSTEM", "misc"}, {"PARAMS", "a=b==c"}, {"EMPTY", ""}, {"EQ", "="}, {"SEQNUM", "5"},
			}},
		},
		{
			name: "no final NUL",
			raw:  "remove@/devices/system/memory/memory7\x00ACTION=remove\x00DEVPATH=/devices/system/memory/memory7\x00SUBSYSTEM=memory\x00SEQNUM=18446744073709551615",
			want: parsed{Action: "remove", DevPath: "/devices/system/memory/memory7", Subsystem: "memory", Seqnum: 18446744073709551615, Fields: [][2]string{
				{"ACTION", "remove"}, {"DEVPATH", "/devices/system/memory/memory7"}, {"SUBSYSTEM", "memory"}, {"SEQNUM", "18446744073709551615"},
			}},
		},
		{
			name: "very long value",
			raw:  "bind@/devices/system/cpu/cpu3\x00ACTION=bind\x00DEVPATH=/devices/system/cpu/cpu3\x00SUBSYSTEM=cpu\x00DRIVER=processor\x00LONG=" + long + "\x00SEQNUM=0099\x00",
			want: parsed{Action: "bind", DevPath: "/devices/system/cpu/cpu3", Subsystem: "cpu", Seqnum: 99, Fields: [][2]string{
				{"ACTION", "bind"}, {"DEVPATH", "/devices/system/cpu/cpu3"}, {"SUBSYSTEM", "cpu"}, {"DRIVER", "processor"}, {"LONG", long}, {"SEQNUM", "0099"},
			}},
		},
		{
			name: "duplicate key other than the four: the first occurrence counts",
			raw:  "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=a\x00DRIVER=a\x00DRIVER=b\x00SEQNUM=1\x00",
			want: parsed{Action: "add", DevPath: "/devices/x", Subsystem: "a", Seqnum: 1, Fields: [][2]string{
				{"ACTION", "add"}, {"DEVPATH", "/devices/x"}, {"SUBSYSTEM", "a"}, {"DRIVER", "a"}, {"DRIVER", "b"}, {"SEQNUM", "1"},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Parse([]byte(tt.raw))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, view(&ev)); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
			if !ev.ReadAt.IsZero() {
				t.Errorf("ReadAt = %v, want zero from Parse", ev.ReadAt)
			}
			// ParseCompact: the same event without its fields, none of it in the buffer.
			b := []byte(tt.raw)
			ev, err = ParseCompact(b)
			if err != nil {
				t.Fatalf("ParseCompact: %v", err)
			}
			clear(b)
			want := tt.want
			want.Fields = nil
			if diff := cmp.Diff(want, view(&ev)); diff != "" {
				t.Errorf("ParseCompact mismatch, its buffer cleared (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want ParseError
	}{
		{"empty", "", ParseError{0, "empty datagram"}},
		{"garbage", "\xff\xfe\x00\x01garbage", ParseError{0, "header is not ACTION@DEVPATH"}},
		{"header only word", "hello", ParseError{0, "header is not ACTION@DEVPATH"}},
		{"empty action", "@/devices/x\x00ACTION=\x00", ParseError{0, "header is not ACTION@DEVPATH"}},
		{"empty path", "add@\x00ACTION=add\x00", ParseError{0, "header is not ACTION@DEVPATH"}},
		{
			"libudev header",
			"libudev\x00\xfe\xed\xca\xfe\x28\x00\x00\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00",
			ParseError{0, `udevd re-broadcast ("libudev" header), not a kernel uevent`},
		},
		{"header without keys", "add@/devices/x", ParseError{14, "missing ACTION"}},
		{"missing ACTION", "add@/devices/x\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00", ParseError{57, "missing ACTION"}},
		{"missing DEVPATH", "add@/devices/x\x00ACTION=add\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00", ParseError{49, "missing DEVPATH"}},
		{"missing SUBSYSTEM", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SEQNUM=1\x00", ParseError{54, "missing SUBSYSTEM"}},
		{"missing SEQNUM", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00", ParseError{59, "missing SEQNUM"}},
		{"SEQNUM not a number", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=12a\x00", ParseError{59, "SEQNUM is not a decimal uint64"}},
		{"SEQNUM negative", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=-1\x00", ParseError{59, "SEQNUM is not a decimal uint64"}},
		{"SEQNUM empty", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=\x00", ParseError{59, "SEQNUM is not a decimal uint64"}},
		{"SEQNUM over uint64", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=18446744073709551616\x00", ParseError{59, "SEQNUM is not a decimal uint64"}},
		{"SEQNUM hex", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=0x10\x00", ParseError{59, "SEQNUM is not a decimal uint64"}},
		{"ACTION differs from header", "add@/devices/x\x00ACTION=remove\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00", ParseError{15, "ACTION does not match the header"}},
		{"DEVPATH differs from header", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/y\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00", ParseError{26, "DEVPATH does not match the header"}},
		{"empty SUBSYSTEM", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=\x00SEQNUM=1\x00", ParseError{45, "empty SUBSYSTEM"}},
		{"empty key", "add@/devices/x\x00ACTION=add\x00=value\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00", ParseError{26, "empty key"}},
		{"field without '='", "add@/devices/x\x00ACTION=add\x00DEVPATH\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00", ParseError{26, "field without '='"}},
		{"empty field (two NULs)", "add@/devices/x\x00ACTION=add\x00\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00", ParseError{26, "empty field"}},
		// What the kernel broadcasts for a uevent a process sent it: the sender's SEQNUM, then its own.
		{"SEQNUM twice", "offline@/devices/system/cpu/cpu0\x00ACTION=offline\x00DEVPATH=/devices/system/cpu/cpu0\x00SUBSYSTEM=cpu\x00SEQNUM=18446744073709551615\x00SEQNUM=162991\x00", ParseError{123, "duplicate SEQNUM"}},
		{"SUBSYSTEM twice", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=a\x00SUBSYSTEM=b\x00SEQNUM=1\x00", ParseError{57, "duplicate SUBSYSTEM"}},
		{"ACTION twice", "add@/devices/x\x00ACTION=add\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=a\x00SEQNUM=1\x00", ParseError{26, "duplicate ACTION"}},
		{"DEVPATH twice", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00DEVPATH=/devices/x\x00SUBSYSTEM=a\x00SEQNUM=1\x00", ParseError{45, "duplicate DEVPATH"}},
		{"two final NULs", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=cpu\x00SEQNUM=1\x00\x00", ParseError{68, "empty field"}},
	}
	for _, tt := range tests {
		for name, parse := range map[string]func([]byte) (Event, error){"Parse": Parse, "ParseCompact": ParseCompact} {
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				ev, err := parse([]byte(tt.raw))
				var perr *ParseError
				if !errors.As(err, &perr) {
					t.Fatalf("%s = %v, %v; want *ParseError", name, ev, err)
				}
				if diff := cmp.Diff(tt.want, *perr); diff != "" {
					t.Errorf("ParseError mismatch (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(parsed{}, view(&ev)); diff != "" {
					t.Errorf("%s returned a non-zero Event with an error (-want +got):\n%s", name, diff)
				}
			})
		}
	}
}

func TestParseErrorMessage(t *testing.T) {
	_, err := Parse([]byte("add@/devices/x\x00ACTION=add\x00DEVPATH\x00"))
	want := "udev: malformed uevent at byte 26: field without '='"
	if err == nil || err.Error() != want {
		t.Errorf("Parse error = %v, want %q", err, want)
	}
}

// Parse copies its input: reusing the receive buffer must not change an event.
func TestParseCopiesInput(t *testing.T) {
	b := []byte(rawMemoryChangeSynth)
	ev, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := view(&ev)
	for i := range b {
		b[i] = 'z'
	}
	if diff := cmp.Diff(want, view(&ev)); diff != "" {
		t.Errorf("event changed after its buffer was overwritten (-want +got):\n%s", diff)
	}
}

func TestEventGet(t *testing.T) {
	ev, err := Parse([]byte(rawCPUOnlineSynth))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key    string
		want   string
		wantOK bool
	}{
		{"MODALIAS", cpuModalias, true},
		{"SYNTH_UUID", "0", true},
		{"SEQNUM", "820", true},
		{"ACTION", "online", true},
		{"DRIVER", "", false},
		{"", "", false},
		{"online@/devices/system/cpu/cpu1", "", false}, // the header is not a key
		{"MODALIAS=cpu", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, ok := ev.Get(tt.key)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Get(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestZeroEvent(t *testing.T) {
	var ev Event
	if v, ok := ev.Get("ACTION"); ok {
		t.Errorf("zero Event: Get(ACTION) = %q, true; want not found", v)
	}
	for k, v := range ev.All() {
		t.Errorf("zero Event: All yielded %q=%q", k, v)
	}
	if ev.Synthetic() {
		t.Error("zero Event is Synthetic")
	}
}

func TestEventAllStops(t *testing.T) {
	ev, err := Parse([]byte(rawMemoryAdd))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range ev.All() {
		keys = append(keys, k)
		if len(keys) == 2 {
			break
		}
	}
	if diff := cmp.Diff([]string{"ACTION", "DEVPATH"}, keys); diff != "" {
		t.Errorf("All with break (-want +got):\n%s", diff)
	}
}

func TestEventString(t *testing.T) {
	ev, err := Parse([]byte(rawCPUOffline))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ev.String(), "offline@/devices/system/cpu/cpu1 seq=815"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestParseAllocations(t *testing.T) {
	b := []byte(rawCPUOnlineSynth)
	allocs := testing.AllocsPerRun(100, func() {
		ev, err := Parse(b)
		if err != nil || ev.Seqnum == 0 {
			t.Fatal("Parse failed")
		}
	})
	if allocs > 1 {
		t.Errorf("Parse makes %v allocations per event, want 1 (the string conversion)", allocs)
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bm := range []struct{ name, raw string }{
		{"cpu", rawCPUOnlineSynth},
		{"memory", rawMemoryOnline},
	} {
		b.Run(bm.name, func(b *testing.B) {
			buf := []byte(bm.raw)
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := Parse(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

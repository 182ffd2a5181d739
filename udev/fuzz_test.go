package udev

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse checks that Parse never panics, that its errors are *ParseError inside the
// input, that an accepted event is self-consistent, and that ParseCompact says what Parse says
// but for the fields, whatever then becomes of its input.
func FuzzParse(f *testing.F) {
	// More seeds, from real kernel datagrams and edge cases, are in testdata/fuzz/FuzzParse.
	f.Add([]byte(rawCPUOnlineSynth))
	f.Add([]byte(rawMemoryChangeSynth))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Parse(b)
		in := slices.Clone(b)
		compact, cerr := ParseCompact(in)
		clear(in)
		if fmt.Sprint(cerr) != fmt.Sprint(err) {
			t.Fatalf("ParseCompact error %v; Parse's %v", cerr, err)
		}
		full := view(&ev)
		full.Fields = nil
		if diff := cmp.Diff(full, view(&compact)); diff != "" {
			t.Fatalf("ParseCompact's event is not Parse's without fields (-Parse +ParseCompact):\n%s", diff)
		}
		if err != nil {
			var perr *ParseError
			if !errors.As(err, &perr) {
				t.Fatalf("Parse error %T %v, want *ParseError", err, err)
			}
			if perr.Offset < 0 || perr.Offset > len(b) || perr.Reason == "" {
				t.Fatalf("ParseError %+v outside the %d-byte input", *perr, len(b))
			}
			return
		}
		if ev.Action == "" || ev.DevPath == "" || ev.Subsystem == "" {
			t.Fatalf("accepted event with empty field: %+v", ev)
		}
		first := map[string]string{}
		for k, v := range ev.All() {
			if k == "" {
				t.Fatalf("All yielded an empty key")
			}
			if _, seen := first[k]; !seen {
				first[k] = v
			}
		}
		for k, want := range first {
			if got, ok := ev.Get(k); !ok || got != want {
				t.Errorf("Get(%q) = %q, %v; All gave %q", k, got, ok, want)
			}
		}
		for key, field := range map[string]string{"ACTION": ev.Action, "DEVPATH": ev.DevPath, "SUBSYSTEM": ev.Subsystem, "SEQNUM": strconv.FormatUint(ev.Seqnum, 10)} {
			got, ok := ev.Get(key)
			if key == "SEQNUM" {
				n, err := strconv.ParseUint(got, 10, 64)
				got = strconv.FormatUint(n, 10)
				ok = ok && err == nil
			}
			if !ok || got != field {
				t.Errorf("Get(%q) = %q, %v; the Event field is %q", key, got, ok, field)
			}
		}
		_, hasUUID := first["SYNTH_UUID"]
		if ev.Synthetic() != hasUUID {
			t.Errorf("Synthetic() = %v with SYNTH_UUID present = %v", ev.Synthetic(), hasUUID)
		}
		_ = ev.String()
	})
}

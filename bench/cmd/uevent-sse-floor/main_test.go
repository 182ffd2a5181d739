//go:build linux

package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// appendLine turns a raw kernel datagram into one SSE data line of valid JSON.
func TestAppendLine(t *testing.T) {
	at := time.Date(2026, 12, 5, 20, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct {
		name, raw string
		want      map[string]any
	}{
		{"cpu online", "online@/devices/system/cpu/cpu1\x00ACTION=online\x00DEVPATH=/devices/system/cpu/cpu1\x00SUBSYSTEM=cpu\x00MODALIAS=cpu:type:x86\n\x00SEQNUM=1234\x00",
			map[string]any{"action": "online", "devpath": "/devices/system/cpu/cpu1", "seqnum": 1234.0}},
		{"value with =", "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00K=a=b\x00SEQNUM=7\x00",
			map[string]any{"action": "add", "devpath": "/devices/x", "seqnum": 7.0}},
		{"quote in a path", "add@/devices/\"x\x00ACTION=add\x00DEVPATH=/devices/\"x\x00SEQNUM=8\x00",
			map[string]any{"action": "add", "devpath": "/devices/\"x", "seqnum": 8.0}},
		{"bad seqnum", "add@/d\x00ACTION=add\x00DEVPATH=/d\x00SEQNUM=12x\x00",
			map[string]any{"action": "add", "devpath": "/d", "seqnum": 0.0}},
		{"no keys", "junk", map[string]any{"action": "", "devpath": "", "seqnum": 0.0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := string(appendLine(nil, []byte(tc.raw), at))
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok || !strings.HasSuffix(data, "\n\n") {
				t.Fatalf("not one SSE data line: %q", line)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(data), &got); err != nil {
				t.Fatalf("%q: %v", data, err)
			}
			tc.want["read_at"] = "2026-12-05T20:00:00.123456789Z"
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v; want %v (line %q)", k, got[k], v, line)
				}
			}
		})
	}
}

// Whatever the datagram, the line is one SSE data line of valid JSON.
func FuzzAppendLine(f *testing.F) {
	f.Add([]byte("online@/devices/system/cpu/cpu1\x00ACTION=online\x00DEVPATH=/devices/system/cpu/cpu1\x00SEQNUM=1\x00"))
	f.Add([]byte("add@/d\x00ACTION=a\xffb\x00DEVPATH=\x01\x00SEQNUM=99999999999999999999\x00"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		line := string(appendLine(nil, raw, time.Unix(0, 0)))
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || !strings.HasSuffix(data, "\n\n") || strings.Count(data, "\n") != 2 {
			t.Fatalf("not one SSE data line: %q", line)
		}
		if !json.Valid([]byte(data)) {
			t.Fatalf("not JSON: %q", data)
		}
	})
}

package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hotplug-agent/hotplug-agent/headroom"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// TestMemory: /memory is the headroom estimate as JSON, 503 with the reason when there is none,
// 404 when the agent does not estimate it.
func TestMemory(t *testing.T) {
	est := headroom.Estimate{Headroom: 17536 << 20, Limit: 21632 << 20, BlockSize: 128 << 20, BlockCost: 2118144,
		StructPage: 64, StructPageSource: "vmcoreinfo", MemmapOnMemory: headroom.MemmapOnMemory{Parameter: "N", Reason: "off"},
		Zones: []headroom.ZoneUse{{Zone: headroom.Zone{Node: 0, Name: "DMA32"}, Kernel: true, FreeBytes: 360 << 20}}}
	var estErr error
	for _, tt := range []struct {
		name   string
		memory func() (headroom.Estimate, error)
		err    error
		code   int
		body   string // for an error: the body; else checked as the estimate
	}{
		{"estimate", func() (headroom.Estimate, error) { return est, estErr }, nil, 200, ""},
		{"no estimate", func() (headroom.Estimate, error) { return est, estErr }, errors.New("headroom: no /sys/devices/system/memory: the kernel has no memory hotplug"), 503,
			"headroom: no /sys/devices/system/memory: the kernel has no memory hotplug\n"},
		{"not estimated", nil, nil, 404, "this agent does not estimate the memory hot-add headroom\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			estErr = tt.err
			reg := notify.NewRegistry(notify.Options{})
			h, err := Handler(Options{Registry: reg, Gatherer: prometheus.NewRegistry(), Memory: tt.memory})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer func() {
				srv.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				reg.Close(ctx)
			}()
			page, err := http.Get(srv.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			html, _ := io.ReadAll(page.Body)
			page.Body.Close()
			if want := map[int]string{200: "<b>Hot-add headroom</b> 17.1 GiB (137 blocks of 128 MiB)",
				503: "<b>Hot-add headroom</b> unknown: headroom: no /sys/devices/system/memory"}[tt.code]; !strings.Contains(string(html), want) {
				t.Errorf("the status page does not say %q", want)
			}
			resp, err := http.Get(srv.URL + "/memory")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("GET /memory: %s: %s; want %d", resp.Status, b, tt.code)
			}
			if tt.code != 200 {
				if string(b) != tt.body {
					t.Errorf("body %q; want %q", b, tt.body)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var got headroom.Estimate
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if diff := cmp.Diff(est, got); diff != "" {
				t.Errorf("/memory (-want +got):\n%s", diff)
			}
			for _, field := range []string{`"headroom_bytes": 18387828736`, `"limit_bytes": 22682796032`, `"block_size_bytes": 134217728`,
				`"struct_page_source": "vmcoreinfo"`, `"memmap_on_memory": {`, `"zone": "DMA32"`, `"kernel": true`} {
				if !strings.Contains(string(b), field) {
					t.Errorf("/memory has no %s:\n%s", field, b)
				}
			}
		})
	}
}

package web

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/hotplug-agent/hotplug-agent/memrange"
	"github.com/hotplug-agent/hotplug-agent/metrics"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// TestMemoryMapLarge: 8,192 blocks (1 TiB of 128 MiB blocks) in a few ranges make a map of a
// few dozen rectangles, one group per range with a title naming it, each device outlined.
func TestMemoryMapLarge(t *testing.T) {
	var blocks []notify.Interface
	for n := range 8192 {
		if n >= 24 && n < 32 {
			continue // the PCI hole
		}
		b := notify.Interface{ClassGUID: notify.GUIDDeviceMemory, Number: n, PhysStart: uint64(n) << 27, Size: 1 << 27, State: "online", Zones: "Normal", Node: n / 4096}
		if n >= 4096 {
			b.Device, b.Zones = "virtio5", "Movable"
		}
		if n >= 8000 {
			b.State, b.Zones = "offline", "Normal Movable"
		}
		blocks = append(blocks, b)
	}
	ranges := memrange.Merge(blocks)
	svg, named, devices := memoryMap(ranges)
	if len(ranges) != 4 || len(named) != 4 {
		t.Fatalf("%d ranges, %d named; want 4", len(ranges), len(named))
	}
	if n := strings.Count(string(svg), "<rect"); n > 300 {
		t.Errorf("the map of 8,192 blocks has %d rectangles; want a few per range", n)
	}
	if len(svg) > 32<<10 {
		t.Errorf("the map of 8,192 blocks is %d bytes", len(svg))
	}
	if strings.Count(string(svg), `class="b online z-movable dev"`) != 1 || strings.Count(string(svg), `class="b offline z-any dev"`) != 1 {
		t.Errorf("the device's ranges are not drawn as its own groups:\n%.2000s", svg)
	}
	if len(devices) != 1 || devices[0] != "virtio5" {
		t.Errorf("devices %v; want [virtio5]", devices)
	}
	if !strings.Contains(string(svg), `data-columns="64" data-rows="128"`) {
		t.Errorf("the map is not 64 blocks a row, 128 rows")
	}
}

// TestQuantile: a histogram's quantiles interpolated in their bucket, as histogram_quantile.
func TestQuantile(t *testing.T) {
	h := &dto.Histogram{SampleCount: proto.Uint64(100), Bucket: []*dto.Bucket{
		{UpperBound: proto.Float64(0.001), CumulativeCount: proto.Uint64(50)},
		{UpperBound: proto.Float64(0.01), CumulativeCount: proto.Uint64(90)},
		{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(100)},
	}}
	for _, tt := range []struct{ q, want float64 }{{0.5, 0.001}, {0.25, 0.0005}, {0.7, 0.0055}, {0.99, 0.091}} {
		if got := quantile(tt.q, h); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v; want %v", tt.q, got, tt.want)
		}
	}
}

// TestStatusPageTwoPhaseAdd: while a CPU's two-phase add is in progress, the grid and the
// summary say so; once it completes, neither does.
func TestStatusPageTwoPhaseAdd(t *testing.T) {
	reg := notify.NewRegistry(notify.Options{})
	defer reg.Close(context.Background())
	cpu := func(n int, state string) notify.Interface {
		return notify.Interface{ClassGUID: notify.GUIDDeviceProcessor, SymbolicLink: "/sys/devices/system/cpu/cpu" + strconv.Itoa(n), Number: n, Node: 0, State: state}
	}
	reg.Seed([]notify.Interface{cpu(0, "online")})
	changes := notify.NewChangeRegistry(notify.ChangeOptions{})
	defer changes.Close(context.Background())
	h, err := Handler(Options{Registry: reg, Gatherer: prometheus.NewRegistry(), Changes: changes,
		Present: func() ([]notify.Interface, error) {
			return []notify.Interface{cpu(0, "online"), cpu(1, "offline")}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func() string {
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	add, err := changes.Begin(context.Background(), cpu(1, "offline"), 7, time.Now(), notify.CauseUevent)
	if err != nil {
		t.Fatal(err)
	}
	page := get()
	for _, want := range []string{`<li class="cpu adding" data-link="/sys/devices/system/cpu/cpu1"`, `<b>Adding</b> cpu1 (two-phase add`} {
		if !strings.Contains(page, want) {
			t.Errorf("during the add, the page lacks %s", want)
		}
	}
	add.Complete()
	page = get()
	if strings.Contains(page, `class="cpu adding"`) || strings.Contains(page, "<b>Adding</b>") || !strings.Contains(page, `<li class="cpu offline" data-link="/sys/devices/system/cpu/cpu1"`) {
		t.Errorf("after the add, the page still shows it in progress")
	}
}

// TestStatusPageLastErrorDate: a registration's last error of an earlier day shows its date, so
// that one of days ago does not read as today's; one of today shows the time of day.
func TestStatusPageLastErrorDate(t *testing.T) {
	reg := notify.NewRegistry(notify.Options{})
	defer reg.Close(context.Background())
	for _, owner := range []string{"old", "new"} {
		if _, err := reg.Register(notify.EventCategoryDeviceInterfaceChange, 0, notify.AllClasses, owner,
			func(context.Context, notify.Notification, any) error { return nil }, nil); err != nil {
			t.Fatal(err)
		}
	}
	errs := metrics.NewErrorLog()
	old, today := time.Now().AddDate(0, 0, -3), time.Now()
	errs.Record("old", old, errors.New("exit status 1"))
	errs.Record("new", today, errors.New("exit status 2"))
	h, err := Handler(Options{Registry: reg, Gatherer: prometheus.NewRegistry(), Errors: errs})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	page := string(b)
	for _, want := range []string{old.Format("2006-01-02 15:04:05") + ": exit status 1", ">" + today.Format("15:04:05") + ": exit status 2"} {
		if !strings.Contains(page, want) {
			t.Errorf("the registrations table lacks %q", want)
		}
	}
}

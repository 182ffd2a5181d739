//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hotplug-agent/hotplug-agent/internal/chromium"
)

// TestIntegrationQEMUStatusPage opens the status page of the agent in a QEMU guest in a real
// headless Chromium on the host and hot-adds a DIMM: the summary counts its blocks, the map
// draws them outlined as a memory device, the notifications chart gets their arrivals, and the
// summary says where the last memory arrival landed.
func TestIntegrationQEMUStatusPage(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU end-to-end tests boot guests: not in -short mode")
	}
	chromium.Path(t) // before the guest boots
	prepare(t)
	p := &pool{test: t.Name()}
	t.Cleanup(p.close)
	g := p.use(t, kernelOnlines)

	ctx := chromium.Start(t, 4*time.Minute, chromedp.WindowSize(1280, 900))
	poll := func(cond, what string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(90*time.Second))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	if _, err := chromedp.Run(ctx, chromedp.Navigate(g.base+"/")); err != nil {
		t.Fatalf("load the guest's status page: %v", err)
	}
	poll(`document.getElementById("stream").textContent === "(live)"`, "the page's event stream never went live")
	blocksOnline := func() int {
		m := regexp.MustCompile(`online \((\d+) blocks\)`).FindStringSubmatch(eval(`document.getElementById("sum-memory").textContent`))
		if m == nil {
			t.Fatalf("the summary does not count the blocks online: %q", eval(`document.getElementById("sum-memory").textContent`))
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	before := blocksOnline()
	barsBefore := eval(`document.getElementById("chart-notes").dataset.points`)

	s := g.subscribe(t, "class=memory")
	got := hotAddDIMM(t, g, s)
	first := *got[0].MemoryBlock

	poll(`/online \(`+strconv.Itoa(before+2)+` blocks\)/.test(document.getElementById("sum-memory").textContent)`,
		"the summary does not count the DIMM's two blocks")
	poll(`document.querySelectorAll("#memmap g.dev").length > 0`, "the map does not draw the DIMM as a memory device")
	poll(`document.getElementById("sum-devices").textContent.includes("Memory devices 1")`, "the summary does not count the DIMM as a memory device")
	poll(`(document.getElementById("sum-last") || {textContent: ""}).textContent.includes("memory`+strconv.Itoa(first+1)+`")`,
		"the summary does not say where the last memory arrival landed")
	poll(`document.getElementById("chart-notes").dataset.points !== `+strconv.Quote(barsBefore),
		"the notifications chart did not change with the DIMM's arrivals")
	if dev := eval(`document.querySelector("#memmap g.dev").dataset.blocks`); dev != strconv.Itoa(first)+"-"+strconv.Itoa(first+1) {
		t.Errorf("the map's device range is blocks %q; want %d-%d", dev, first, first+1)
	}
	if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		p := filepath.Join(artefactDir(t, t.Name(), "screenshots"), "status-page-dimm.png")
		if os.WriteFile(p, shot, 0o644) == nil {
			t.Logf("screenshot: %s", p)
		}
	}
}

//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/hotplug-agent/hotplug-agent/internal/chromium"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// repoTop is the top of the repository.
func repoTop(t *testing.T) string {
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(top))
}

// artefactDir is where tests leave files for a person to look at: $HOTPLUG_ARTEFACTS, or
// .cache/artefacts at the top of the repository.
func artefactDir(t *testing.T) string {
	dir := os.Getenv("HOTPLUG_ARTEFACTS")
	if dir == "" {
		if top := repoTop(t); top != "" {
			dir = filepath.Join(top, ".cache", "artefacts")
		} else {
			dir = t.TempDir()
		}
	}
	os.MkdirAll(dir, 0o755)
	return dir
}

// axeScript reads axe-core, which `make deps` installs under .cache/npm.
func axeScript(t *testing.T) string {
	t.Helper()
	p := filepath.Join(repoTop(t), ".cache", "npm", "node_modules", "axe-core", "axe.min.js")
	b, err := os.ReadFile(p)
	if err != nil {
		testenv.Unavailable(t, "axe-core not installed (%v): `make deps` installs it", err)
	}
	return string(b)
}

// browser starts a headless Chromium for the rest of t, its window w×h CSS pixels.
func browser(t *testing.T, w, h int64) context.Context {
	t.Helper()
	ctx := chromium.Start(t, 3*time.Minute, chromedp.WindowSize(int(w), int(h)))
	if _, err := chromedp.Run(ctx, chromedp.EmulateViewport(w, h)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it holds, failing t with what after 30 s.
func waitFor(t *testing.T, ctx context.Context, cond, what string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// screenshot saves the whole page as an artefact, a PNG.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(artefactDir(t), name)
	if err := os.WriteFile(p, shot, 0o644); err == nil {
		t.Logf("screenshot: %s", p)
	}
}

// axeCheck runs axe-core on the page and fails t for every serious or critical violation.
func axeCheck(t *testing.T, ctx context.Context, axe, where string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](axe+";0")); err != nil {
		t.Fatalf("load axe-core: %v", err)
	}
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](`axe.run(document).then(r => r.violations
		.filter(v => v.impact === "serious" || v.impact === "critical")
		.map(v => v.impact + " " + v.id + ": " + v.help + " (" + v.nodes.map(n => n.target.join(" ")).slice(0, 5).join(", ") + ")").join("\n"))`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("axe.run: %v", err)
	}
	if out != "" {
		t.Errorf("axe-core at %s: serious or critical violations:\n%s", where, out)
	}
}

// failingConfig is a configuration with an exec callback on processors that always fails.
func failingConfig(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte(`callbacks:
  - name: failing-hook
    class: processor
    exec:
      command: ["/bin/sh", "-c", "echo pool not ready >&2; exit 3"]
`), 0o600)
	return cfg
}

// TestIntegrationStatusPage loads the status page in a real headless Chromium through a real CPU
// offline/online cycle: the notification history is on the page at load, the summary and the
// CPU grid follow the CPU, the rows arrive live, a chart gets its points, the failing callback's
// errors show, the memory map agrees with lsmem and names the block under the pointer; axe-core
// finds no serious or critical violation at desktop and phone widths; the summary and the tables
// are in the HTML itself, for a browser without JavaScript.
func TestIntegrationStatusPage(t *testing.T) {
	testenv.RequireRoot(t)
	chromium.Path(t)
	axe := axeScript(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	a := startAgent(t, "--config.file="+failingConfig(t))
	cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*")
	present := len(cpus)

	// A cycle before the page is open: it must be in the history the page shows at load.
	testenv.SetCPUOnline(t, cpu, false)
	testenv.SetCPUOnline(t, cpu, true)
	waitHTML(t, a.base, fmt.Sprintf("<b>CPUs</b> %d/%d online", present, present))

	// Without JavaScript: the summary, the ranges, the CPUs and the history are in the HTML.
	page := waitHTML(t, a.base, `class="bad">`) // the failing callback's errors
	for _, want := range []string{
		fmt.Sprintf("<b>CPUs</b> %d/%d online", present, present),
		"<b>Memory</b> ", " online (", "<b>Hot-add headroom</b> ", "<b>Health</b> <span>ok</span>",
		`<svg id="memmap"`, fmt.Sprintf(`data-link="%s"`, link), `<tr class="removal">`, `<tr class="arrival">`,
		"failing-hook", "exit status 3",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page's HTML lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`<b>Callback errors, last hour</b> <span class="bad">(\d+)</span>`).FindStringSubmatch(page); m == nil || m[1] == "0" {
		t.Errorf("the summary does not count the failing callback's errors of the last hour")
	}

	for _, v := range []struct {
		name string
		w, h int64
	}{{"desktop", 1280, 900}, {"phone", 390, 844}} {
		t.Run(v.name, func(t *testing.T) {
			ctx := browser(t, v.w, v.h)
			if _, err := chromedp.Run(ctx, chromedp.Navigate(a.base+"/")); err != nil {
				t.Fatalf("load the status page: %v", err)
			}
			waitFor(t, ctx, `document.getElementById("stream").textContent === "(live)"`, "the page's event stream never went live")
			// The history at load, newest first: the arrival above the removal.
			order := eval[string](t, ctx, fmt.Sprintf(`Array.from(document.querySelectorAll("#notifications tbody tr")).filter(r => r.textContent.includes(%q)).map(r => r.className).slice(0, 2).join(",")`, link))
			if order != "arrival,removal" {
				t.Errorf("history at load for %s, newest first: %q; want arrival,removal", link, order)
			}
			if n := eval[int](t, ctx, `document.querySelectorAll("#cpus li.cpu").length`); n != present {
				t.Errorf("the CPU grid shows %d CPUs; this machine has %d", n, present)
			}
			// The ranges beside the map are lsmem's.
			want := lsmemRanges(t)
			if n := eval[int](t, ctx, `document.querySelectorAll("#ranges tbody tr").length`); n != len(want) {
				t.Errorf("the page lists %d memory ranges; lsmem %d", n, len(want))
			}
			if n := eval[int](t, ctx, `document.querySelectorAll("#memmap g.b").length`); n != len(want) {
				t.Errorf("the map draws %d ranges; lsmem lists %d", n, len(want))
			}
			// The pointer over the map's first cell names block 0.
			box := eval[[]float64](t, ctx, `(() => { window.scrollTo(0, 0); const m = document.getElementById("memmap"), s = m.getBoundingClientRect(); return [s.left, s.top, s.width, s.height, +m.dataset.columns]; })()`)
			x, y := box[0]+box[2]/box[4]/2, box[1]+2
			if _, err := chromedp.Run(ctx, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x, y)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, `document.getElementById("map-hover").textContent.startsWith("memory0: ")`, "hovering the map's first cell does not name memory0")

			axeCheck(t, ctx, axe, v.name+" width")
			if v.name == "phone" {
				if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > int(v.w)+1 {
					t.Errorf("at %d px the page is %d px wide: it scrolls sideways", v.w, w)
				}
				screenshot(t, ctx, "status-page-phone.png")
				return
			}

			// Live: the CPU goes offline, the summary and the grid say so; it comes back.
			testenv.SetCPUOnline(t, cpu, false)
			waitFor(t, ctx, fmt.Sprintf(`document.getElementById("sum-cpus").textContent.includes("%d/%d online")`, present-1, present),
				"the summary does not show the CPU offline")
			waitFor(t, ctx, fmt.Sprintf(`document.querySelector('li.cpu[data-cpu="%d"]').classList.contains("offline")`, cpu),
				"the CPU grid does not show the CPU offline")
			screenshot(t, ctx, "status-page-cpu-offline.png")
			testenv.SetCPUOnline(t, cpu, true)
			waitFor(t, ctx, fmt.Sprintf(`document.getElementById("sum-cpus").textContent.includes("%d/%d online")`, present, present),
				"the summary does not show the CPU back online")
			waitFor(t, ctx, fmt.Sprintf(`document.querySelector('li.cpu[data-cpu="%d"]').classList.contains("online")`, cpu),
				"the CPU grid does not show the CPU back online")
			waitFor(t, ctx, fmt.Sprintf(`document.querySelector("#notifications tbody tr").className === "arrival" && document.querySelector("#notifications tbody tr").textContent.includes(%q)`, link),
				"the arrival did not come live to the top of the notifications")
			// Two cycles, four notifications, all within the last hour.
			if n := eval[int](t, ctx, `+document.getElementById("chart-notes").dataset.points`); n < 2 {
				t.Errorf("the notifications chart has %d bars; want the cycles' arrivals and removals", n)
			}
			// The failing callback ran: its latency is charted.
			waitFor(t, ctx, `+document.getElementById("chart-latency").dataset.points > 0`, "the latency chart has no point")
			if txt := eval[string](t, ctx, `document.getElementById("registrations").textContent`); !strings.Contains(txt, "exit status 3") {
				t.Errorf("the registrations do not show the failing callback's last error:\n%s", txt)
			}
			screenshot(t, ctx, "status-page.png")
		})
	}
}

// waitHTML fetches the status page until its HTML contains want, and returns it.
func waitHTML(t *testing.T, base, want string) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(base + "/")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = string(b)
		if strings.Contains(last, want) {
			return last
		}
	}
	t.Fatalf("the status page never contained %q:\n%s", want, last)
	return ""
}

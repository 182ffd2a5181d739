//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// chromium finds Debian's Chromium: a skip without it, a failure in CI.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	testenv.Unavailable(t, "chromium not found: `make deps` installs Debian's chromium package")
	return ""
}

// artefactDir is where tests leave files for a person to look at: $HOTPLUG_ARTEFACTS, or
// .cache/artefacts at the top of the repository.
func artefactDir(t *testing.T) string {
	dir := os.Getenv("HOTPLUG_ARTEFACTS")
	if dir == "" {
		top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
		if err != nil {
			dir = t.TempDir()
		} else {
			dir = filepath.Join(strings.TrimSpace(string(top)), ".cache", "artefacts")
		}
	}
	os.MkdirAll(dir, 0o755)
	return dir
}

// TestIntegrationStatusPage loads the status page in a real headless Chromium: it must list this
// machine's CPUs and, after a real CPU offline/online cycle, show the removal and the arrival
// rows that its script took from /events.
func TestIntegrationStatusPage(t *testing.T) {
	testenv.RequireRoot(t)
	exe := chromium(t)
	cpu := testenv.HotpluggableCPU(t)
	testenv.LockCPUs(t)
	link := fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)
	a := startAgent(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	if _, err := chromedp.Run(ctx, chromedp.Navigate(a.base+"/")); err != nil {
		t.Fatalf("load the status page: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("stream").textContent === "(live)"`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the page's event stream never went live: %v", err)
	}
	cpuRows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#processors tbody tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*")
	if cpuRows != len(cpus) {
		t.Errorf("the page lists %d CPUs; this machine has %d", cpuRows, len(cpus))
	}

	testenv.SetCPUOnline(t, cpu, false)
	testenv.SetCPUOnline(t, cpu, true)
	row := func(event string) string {
		return fmt.Sprintf(`Array.from(document.querySelectorAll("#notifications tbody tr.%s")).some(r => r.textContent.includes(%q))`, event, link)
	}
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](row("removal"), chromedp.WithPollingTimeout(20*time.Second)))
	if err == nil {
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](row("arrival"), chromedp.WithPollingTimeout(20*time.Second)))
	}
	if shot, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
		p := filepath.Join(artefactDir(t), "status-page.png")
		if werr := os.WriteFile(p, shot, 0o644); werr == nil {
			t.Logf("screenshot: %s", p)
		}
	}
	if err != nil {
		t.Fatalf("the page did not show the removal and the arrival of %s: %v", link, err)
	}
	// The removal came first: rows are prepended, so the arrival is above it.
	order, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`Array.from(document.querySelectorAll("#notifications tbody tr")).filter(r => r.textContent.includes(%q)).map(r => r.className).join(",")`, link)))
	if !strings.HasPrefix(order, "arrival,removal") {
		t.Errorf("notification rows for %s, newest first: %q; want arrival,removal", link, order)
	}
}

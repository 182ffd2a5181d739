// Package chromium starts the headless Chromium that the project's page tests drive with
// chromedp, with the flags a machine without internet needs: no background networking, no
// component updates, no sync, no QUIC, no first-run pages. It is for tests only.
package chromium

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

// Path returns the machine's Chromium, or reports it unavailable (t skips, or fails under
// CI=true: `make deps` installs it). It does not block.
func Path(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	testenv.Unavailable(t, "chromium not found: `make deps` installs Debian's chromium package")
	return ""
}

// Start starts a headless Chromium, with a profile of its own, for the rest of t, and returns
// the context of its first tab, which ends after timeout; extra adds allocator options (a
// window size). It does not wait for the browser: the first chromedp.Run does.
func Start(t testing.TB, timeout time.Duration, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Path(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, extra...)...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return ctx
}

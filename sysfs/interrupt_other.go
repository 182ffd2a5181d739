//go:build !linux

package sysfs

import (
	"context"
	"fmt"
)

// writeInterruptible writes v to the attribute p; ctx is only checked before the write (there
// is no memory hotplug to interrupt outside Linux).
func writeInterruptible(ctx context.Context, p, v string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("sysfs: write %q to %s: not begun: %w", v, p, context.Cause(ctx))
	}
	return writeAttr(p, v)
}

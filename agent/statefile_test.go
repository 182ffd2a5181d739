//go:build linux

package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hotplug-agent/hotplug-agent/statefile"
)

// TestNewFailsCleanlyAfterRestoringState: when New fails after it restored a state file, it
// closes what it opened, as it does when it fails before.
func TestNewFailsCleanlyAfterRestoringState(t *testing.T) {
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	if err := statefile.Save(statePath, statefile.State{Clean: true}); err != nil {
		t.Fatal(err)
	}
	// A control socket path that is a regular file: New fails after the state file is read.
	control := filepath.Join(dir, "control.sock")
	if err := os.WriteFile(control, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	src := newFakeSource()
	_, err := New(Options{SysfsPath: fixture(t), StatePath: statePath, ControlSocket: control,
		ListenAddresses: []string{"127.0.0.1:0"}, Source: src})
	if err == nil {
		t.Fatal("New with a control socket path that is a regular file succeeded")
	}
	select {
	case <-src.closed:
	default:
		t.Errorf("New failed (%v) after restoring the state file, and left the uevent source open", err)
	}
}

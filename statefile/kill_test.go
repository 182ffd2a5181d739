//go:build linux

package statefile

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplug-agent/hotplug-agent/notify"
)

// saveLoopEnv, set to a path, makes the test binary a child that saves to that path in a loop.
const saveLoopEnv = "HOTPLUG_AGENT_STATEFILE_SAVE_LOOP"

// loopStates are what the child saves, in turn: a larger state and a small one.
func loopStates() []State {
	large := State{Version: 1, LastEventID: 1, SavedAt: savedAt}
	for n := range 4 {
		large.Interfaces = append(large.Interfaces, cpu(n))
	}
	for n := range 256 {
		large.Interfaces = append(large.Interfaces, mem(n))
	}
	small := State{Version: 1, Interfaces: []notify.Interface{cpu(0), cpu(1)}, LastEventID: 2, SavedAt: savedAt}
	return []State{large, small}
}

// saveLoop is the child: it saves loopStates in turn, saying so after the first save, until it
// is killed or its standard input closes (the test that started it is gone).
func saveLoop(path string) {
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	states := loopStates()
	for k := 0; ; k++ {
		save := Save
		if k%3 == 2 {
			save = Write // no fsync, beside the file: a kill must find a whole state all the same
		}
		if err := save(path, states[k%len(states)]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if k == 0 {
			fmt.Println("saving")
		}
	}
}

// TestSaveSurvivesSIGKILL kills a process that saves in a loop, at random moments, and checks
// that the file always loads and holds one of the states saved whole (guarantee 8: SIGKILL at any
// moment leaves a state file that loads).
func TestSaveSurvivesSIGKILL(t *testing.T) {
	if path := os.Getenv(saveLoopEnv); path != "" {
		saveLoop(path)
		return
	}
	kills := 50
	if testing.Short() {
		kills = 10
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	states := loopStates()
	if err := Save(path, states[1]); err != nil {
		t.Fatal(err)
	}
	midSave, changed := 0, 0
	last := states[1]
	for k := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSaveSurvivesSIGKILL$")
		cmd.Env = append(os.Environ(), saveLoopEnv+"="+path)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "saving\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("kill %d: the child did not start saving: %q, %v; stderr: %s", k, line, err, stderr.String())
		}
		time.Sleep(rand.N(40 * time.Millisecond))
		cmd.Process.Kill()
		cmd.Wait()
		stdin.Close()
		if stderr.Len() > 0 {
			t.Fatalf("kill %d: the child failed: %s", k, stderr.String())
		}

		got, err := Load(path)
		if err != nil {
			t.Fatalf("kill %d: Load after SIGKILL: %v", k, err)
		}
		if !slices.ContainsFunc(states, func(s State) bool { return cmp.Equal(s, got) }) {
			t.Fatalf("kill %d: Load after SIGKILL gave a state that was never saved: %d interfaces, last event id %d",
				k, len(got.Interfaces), got.LastEventID)
		}
		if !cmp.Equal(got, last) {
			changed++
		}
		last = got
		if slices.ContainsFunc(dirNames(t, dir), func(n string) bool { return strings.HasPrefix(n, tempPrefix("state.json")) }) {
			midSave++ // killed between creating its temporary file and renaming it
		}
	}
	t.Logf("%d kills, %d of them between a save's temporary file and its rename; the state loaded changed %d times",
		kills, midSave, changed)
	if err := Save(path, states[0]); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"state.json"}) {
		t.Errorf("after a Save the directory holds %q; want only state.json", names)
	}
}

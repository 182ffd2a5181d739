package sysfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree describes a sysfs tree to build under a root: path (relative, slash-separated) to
// content. A path ending in "/" is an empty directory; content starting with "-> " makes a
// symbolic link to the rest.
type tree map[string]string

// minimalTree is the least NewFS accepts, with one CPU that cannot be offlined.
func minimalTree() tree {
	return tree{
		"devices/system/cpu/possible": "0\n",
		"devices/system/cpu/present":  "0\n",
		"devices/system/cpu/online":   "0\n",
		"devices/system/cpu/cpu0/":    "",
	}
}

// withMemory adds a memory directory with a 128 MiB block size to t and returns t.
func (t tree) withMemory() tree {
	t["devices/system/memory/block_size_bytes"] = "8000000\n"
	t["devices/system/memory/auto_online_blocks"] = "offline\n"
	return t
}

// block adds memory block n with the usual files to t and returns t.
func (t tree) block(n, physIndex, state string) tree {
	d := "devices/system/memory/memory" + n + "/"
	t[d+"state"] = state + "\n"
	t[d+"phys_index"] = physIndex + "\n"
	t[d+"valid_zones"] = "Normal\n"
	t[d+"removable"] = "1\n"
	t[d+"node0"] = "-> ../../node/node0"
	return t
}

// build writes t under a new temporary directory and returns that directory.
func (t tree) build(tb testing.TB) string {
	tb.Helper()
	root := tb.TempDir()
	for p, content := range t {
		full := filepath.Join(root, filepath.FromSlash(p))
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			tb.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "-> "); ok {
			if err := os.Symlink(target, full); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return root
}

// mustFS builds t and opens it, failing the test on error.
func (t tree) mustFS(tb testing.TB) FS {
	tb.Helper()
	fsys, err := NewFS(t.build(tb))
	if err != nil {
		tb.Fatalf("NewFS: %v", err)
	}
	return fsys
}

//go:build !unix

package statefile

import (
	"io/fs"
	"os"
)

// dirFlags open the directory to sync it.
const dirFlags = 0

// owner reports no owner: this system has no uids to compare.
func owner(fs.FileInfo) (uid int, ok bool) { return 0, false }

// openFile opens the state file at path for reading.
func openFile(path string) (*os.File, error) { return os.Open(path) }

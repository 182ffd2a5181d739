//go:build !linux

package sysfs

import (
	"io"
	"os"
	"path/filepath"
)

// dir is an open directory whose entries and attributes can be read. (Linux has a faster one.)
type dir struct {
	f    *os.File
	path string
}

// openDir opens directory p. The caller must close it.
func openDir(p string) (dir, error) {
	f, err := os.Open(p)
	if err != nil {
		return dir{}, unwrapPath(err)
	}
	return dir{f, p}, nil
}

func (d dir) close() { d.f.Close() } // read-only: a close error cannot lose data

// names returns the entries of d, unsorted, without "." and "..".
func (d dir) names([]byte) ([]string, error) {
	names, err := d.f.Readdirnames(-1)
	if err != nil {
		return nil, unwrapPath(err)
	}
	return names, nil
}

// read reads the attribute name in d; see readAttr.
func (d dir) read(name string, buf []byte) ([]byte, error) {
	return readAttr(filepath.Join(d.path, name), buf)
}

// readAttr reads the attribute at p into buf (scratch space of at least scratchSize bytes)
// with one bounded read, and returns the content with surrounding white space trimmed: a
// subslice of buf, valid until its next use. The errors carry no path, so callers can wrap
// them with one, and errors.Is with fs.ErrNotExist works.
func readAttr(p string, buf []byte) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, unwrapPath(err)
	}
	n, err := f.Read(buf[:maxAttrSize+1])
	f.Close() // read-only: a close error cannot lose data
	if err != nil && err != io.EOF {
		return nil, unwrapPath(err)
	}
	return checkAttr(buf[:n])
}

// attrFile is an attribute held open, read from its start by every read.
type attrFile struct{ f *os.File }

// openAttr opens the attribute at p. The caller must close it.
func openAttr(p string) (attrFile, error) {
	f, err := os.Open(p)
	if err != nil {
		return attrFile{}, unwrapPath(err)
	}
	return attrFile{f}, nil
}

// read reads the whole attribute again, as readAttr does, from offset 0.
func (a attrFile) read(buf []byte) ([]byte, error) {
	n, err := a.f.ReadAt(buf[:maxAttrSize+1], 0)
	if err != nil && err != io.EOF {
		return nil, unwrapPath(err)
	}
	return checkAttr(buf[:n])
}

func (a attrFile) close() error { return a.f.Close() }

// readAttrPath is readAttr for a path held in p.
func readAttrPath(p []byte, buf []byte) ([]byte, error) { return readAttr(string(p), buf) }

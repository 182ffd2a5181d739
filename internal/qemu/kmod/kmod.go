// Package kmod reads what a Linux kernel module says about itself (its .modinfo section: name and
// depends) and orders a set of modules so that each comes after the modules it depends on: what
// modprobe does with modules.dep, for a kernel package that was unpacked but never installed (the
// package ships no modules.dep; depmod writes it at install time).
package kmod

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Module is one kernel module file.
type Module struct {
	// Name is the module's name as the kernel knows it ("virtio_net"), from .modinfo.
	Name string
	// Path is the .ko file.
	Path string
	// Depends are the names of the modules it needs loaded first.
	Depends []string
}

// Read reads the .modinfo section of the module file at path. It does not block beyond the read.
func Read(path string) (Module, error) {
	f, err := elf.Open(path)
	if err != nil {
		return Module{}, fmt.Errorf("kmod: %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return Module{}, fmt.Errorf("kmod: %s: no .modinfo section: not a kernel module", path)
	}
	b, err := s.Data()
	if err != nil {
		return Module{}, fmt.Errorf("kmod: %s: read .modinfo: %w", path, err)
	}
	m := ParseModinfo(b)
	m.Path = path
	if m.Name == "" {
		// Old modules have no name= entry: the file name is the name, with '-' as '_'.
		m.Name = strings.ReplaceAll(strings.TrimSuffix(filepath.Base(path), ".ko"), "-", "_")
	}
	return m, nil
}

// ParseModinfo parses the contents of a .modinfo section: NUL-separated key=value strings. Only
// name and depends are kept; Path is left empty.
func ParseModinfo(b []byte) Module {
	var m Module
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			m.Name = v
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" && !slices.Contains(m.Depends, d) {
					m.Depends = append(m.Depends, d)
				}
			}
		}
	}
	return m
}

// Index is a set of modules by name.
type Index map[string]Module

// Scan reads every .ko file under dir (recursively) into an Index.
func Scan(dir string) (Index, error) {
	idx := Index{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return nil
		}
		m, err := Read(p)
		if err != nil {
			return err
		}
		idx[m.Name] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kmod: scan %s: %w", dir, err)
	}
	return idx, nil
}

// Order returns the modules named in want and everything they depend on, each after its
// dependencies (want's order is kept where dependencies allow). A dependency missing from the
// index, or a cycle, is an error naming the modules involved.
func (idx Index) Order(want ...string) ([]Module, error) {
	var out []Module
	const (
		visiting = 1
		done     = 2
	)
	mark := map[string]int{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch mark[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("kmod: dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		m, ok := idx[name]
		if !ok {
			if len(chain) == 0 {
				return fmt.Errorf("kmod: no module %q", name)
			}
			return fmt.Errorf("kmod: module %q, needed by %s, is missing", name, strings.Join(chain, " -> "))
		}
		mark[name] = visiting
		for _, d := range m.Depends {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		mark[name] = done
		out = append(out, m)
		return nil
	}
	for _, w := range want {
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// All returns every module of the index in an order that loads each after its dependencies
// (names sorted where the order is free, so the result is stable).
func (idx Index) All() ([]Module, error) {
	names := make([]string, 0, len(idx))
	for n := range idx {
		names = append(names, n)
	}
	slices.Sort(names)
	return idx.Order(names...)
}

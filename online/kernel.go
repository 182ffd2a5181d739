package online

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// KernelSettings are the kernel's own settings for onlining hot-added memory, as their sysfs
// files read and are written.
type KernelSettings struct {
	// AutoOnlineBlocks is devices/system/memory/auto_online_blocks: offline, online,
	// online_kernel or online_movable.
	AutoOnlineBlocks string `json:"auto_online_blocks"`
	// OnlinePolicy is module/memory_hotplug/parameters/online_policy: contig-zones or
	// auto-movable; "" where the kernel has none (before Linux 5.15), or to leave it.
	OnlinePolicy string `json:"online_policy,omitempty"`
	// AutoMovableRatio is module/memory_hotplug/parameters/auto_movable_ratio, in percent; ""
	// likewise.
	AutoMovableRatio string `json:"auto_movable_ratio,omitempty"`
}

// The settings' files under the sysfs root.
const (
	autoOnlineBlocksFile = "devices/system/memory/auto_online_blocks"
	onlinePolicyFile     = "module/memory_hotplug/parameters/online_policy"
	autoMovableRatioFile = "module/memory_hotplug/parameters/auto_movable_ratio"
)

// ReadKernelSettings reads the settings under the sysfs root; a parameter the kernel does not
// have reads as "". It blocks on file reads and is safe for concurrent use.
func ReadKernelSettings(root string) (KernelSettings, error) {
	var s KernelSettings
	for _, f := range []struct {
		path     string
		to       *string
		optional bool
	}{
		{autoOnlineBlocksFile, &s.AutoOnlineBlocks, false},
		{onlinePolicyFile, &s.OnlinePolicy, true},
		{autoMovableRatioFile, &s.AutoMovableRatio, true},
	} {
		p := filepath.Join(root, f.path)
		b, err := os.ReadFile(p)
		switch {
		case err != nil && f.optional && errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return KernelSettings{}, fmt.Errorf("kernel onlining: read %s: %w", p, err)
		default:
			*f.to = strings.TrimSpace(string(b))
		}
	}
	return s, nil
}

// KernelSettingsFor returns what policy p (Memory Kernel) asks of the kernel: auto_online_blocks
// "online" with the auto-movable online policy at p.MovableRatio (KernelAutoMovable, the
// default), or auto_online_blocks set to p.KernelOnline, the online policy left as it is.
func KernelSettingsFor(p Policy) KernelSettings {
	switch p.KernelOnline {
	case "", KernelAutoMovable:
		return KernelSettings{AutoOnlineBlocks: Online, OnlinePolicy: KernelAutoMovable, AutoMovableRatio: strconv.Itoa(p.MovableRatio)}
	default:
		return KernelSettings{AutoOnlineBlocks: p.KernelOnline}
	}
}

// apply writes the settings that are not "": when onlining starts (start), the online policy and
// its ratio first, then auto_online_blocks; when it stops, auto_online_blocks first.
func (s KernelSettings) apply(root string, start bool) error {
	files := []struct{ path, v string }{
		{onlinePolicyFile, s.OnlinePolicy},
		{autoMovableRatioFile, s.AutoMovableRatio},
		{autoOnlineBlocksFile, s.AutoOnlineBlocks},
	}
	if !start {
		files[0], files[2] = files[2], files[0]
	}
	var errs []error
	for _, f := range files {
		if f.v == "" {
			continue
		}
		p := filepath.Join(root, f.path)
		if err := writeSetting(p, f.v); err != nil {
			errs = append(errs, fmt.Errorf("kernel onlining: write %q to %s: %w", f.v, p, err))
		}
	}
	return errors.Join(errs...)
}

func writeSetting(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(v))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// KernelTakeover configures the kernel's own onlining while the policy is Kernel, and puts back
// the settings it found when the policy changes or the agent stops. The settings it found are
// kept in a file (beside the state file) until they are put back, so that an agent that was
// killed puts them back at its next start. Its methods block on sysfs and file writes and are
// safe for concurrent use.
type KernelTakeover struct {
	root string // the sysfs root
	path string // the file of the settings found; "" keeps none
	log  *slog.Logger

	mu    sync.Mutex
	found *KernelSettings // the settings before the agent changed them; nil: unchanged
}

// NewKernelTakeover returns a KernelTakeover of the kernel under the sysfs root, keeping the
// settings it found in the file at path ("" keeps none: a killed agent leaves the kernel
// configured). A file left by an agent that did not put the settings back is read here: Sync
// then puts them back, or keeps them to put back later. A file that cannot be read is an error.
func NewKernelTakeover(root, path string, log *slog.Logger) (*KernelTakeover, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &KernelTakeover{root: root, path: path, log: log}
	if path == "" {
		return k, nil
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return k, nil
	case err != nil:
		return nil, fmt.Errorf("kernel onlining: %w", err)
	}
	var s KernelSettings
	if err := json.Unmarshal(b, &s); err != nil || s.AutoOnlineBlocks == "" {
		return nil, fmt.Errorf("kernel onlining: %s: not the kernel settings an agent saved (remove it): %v", path, err)
	}
	k.found = &s
	log.Warn("kernel onlining: the last run left the kernel configured; it is put back unless the policy is still kernel",
		"file", path, "auto_online_blocks", s.AutoOnlineBlocks, "online_policy", s.OnlinePolicy, "auto_movable_ratio", s.AutoMovableRatio)
	return k, nil
}

// Sync makes the kernel do what p asks: under the policy Kernel its settings are
// KernelSettingsFor(p), with those it leaves as they are as the agent found them (those found
// first are kept, to be put back); under any other they are put back. An auto-movable policy on a kernel without it is an error in the configuration's
// terms, and nothing is written.
func (k *KernelTakeover) Sync(p Policy) error {
	if p.Memory != Kernel {
		return k.Restore()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, err := ReadKernelSettings(k.root)
	if err != nil {
		return err
	}
	want := KernelSettingsFor(p)
	if want.OnlinePolicy != "" && cur.OnlinePolicy == "" {
		return fmt.Errorf("online.kernel_online: auto-movable: this kernel has no memory_hotplug online_policy (Linux 5.15 and newer have it): write kernel_online: online_movable, or memory: planned")
	}
	if k.found == nil {
		k.found = &cur
		if err := k.save(cur); err != nil {
			k.found = nil
			return err
		}
	}
	// What p leaves as it is, is as the agent found it: a reload from auto-movable to
	// kernel_online: online puts the kernel's own online policy back, as a start with it finds it.
	if want.OnlinePolicy == "" {
		want.OnlinePolicy = k.found.OnlinePolicy
	}
	if want.AutoMovableRatio == "" {
		want.AutoMovableRatio = k.found.AutoMovableRatio
	}
	if err := want.apply(k.root, true); err != nil {
		return err
	}
	k.log.Info("kernel onlining: the kernel onlines hot-added memory itself while the agent runs",
		"auto_online_blocks", want.AutoOnlineBlocks, "online_policy", want.OnlinePolicy, "auto_movable_ratio", want.AutoMovableRatio,
		"was", fmt.Sprintf("%s/%s/%s", k.found.AutoOnlineBlocks, k.found.OnlinePolicy, k.found.AutoMovableRatio))
	return nil
}

// Restore puts back the settings the agent found, if it changed them, and removes their file.
func (k *KernelTakeover) Restore() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.found == nil {
		return nil
	}
	s := *k.found
	if err := s.apply(k.root, false); err != nil {
		return err
	}
	k.found = nil
	if k.path != "" {
		if err := os.Remove(k.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kernel onlining: %w", err)
		}
	}
	k.log.Info("kernel onlining: put back the kernel's settings", "auto_online_blocks", s.AutoOnlineBlocks,
		"online_policy", s.OnlinePolicy, "auto_movable_ratio", s.AutoMovableRatio)
	return nil
}

// save writes s to k.path atomically (a file of its own, then a rename), readable by the owner
// alone.
func (k *KernelTakeover) save(s KernelSettings) error {
	if k.path == "" {
		k.log.Warn("kernel onlining: without a state file, a killed agent leaves the kernel configured", "auto_online_blocks", s.AutoOnlineBlocks)
		return nil
	}
	b, _ := json.Marshal(s)
	// At a first start the state file's directory may not be there yet: it is made as the state
	// file's own save makes it.
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return fmt.Errorf("kernel onlining: save the settings found: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(k.path), filepath.Base(k.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("kernel onlining: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), k.path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("kernel onlining: save the settings found: %w", err)
	}
	return nil
}

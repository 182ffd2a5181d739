package sysfs

import (
	"fmt"
	"io/fs"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// MemoryBlock is one memory block as sysfs shows it under devices/system/memory/memoryN: the
// unit in which the kernel onlines, offlines, adds and removes memory.
type MemoryBlock struct {
	// Index is N in memoryN.
	Index int
	// State is the state file as read, trimmed: "online", "offline" or "going-offline".
	State string
	// PhysIndex is the block's number in physical address order: N of memoryN, which is what
	// the kernel's phys_index shows (memory_block_id of its first section), so it is not read.
	PhysIndex uint64
	// PhysStart is the block's first physical address: PhysIndex times the block size.
	PhysStart uint64
	// Size is the block size in bytes (memory/block_size_bytes).
	Size uint64
	// ValidZones is valid_zones as read, trimmed: the zone of an online block, e.g. "Normal",
	// "Movable", "DMA32" or "none"; "" when the file is absent or the block is not online. It is
	// not read for other blocks: for an offline block the kernel computes the zones it could
	// join, and Linux 6.1 dereferences NULL doing that for a block still being hot-added (seen
	// in the QEMU tests), killing the reader.
	ValidZones string
	// Node is M from a memoryN/nodeM link (the lowest M if there are several); -1 when there is
	// none.
	Node int
}

// Online reports whether the block is in use: State is "online", or "going-offline" (the memory
// is still in use until the kernel says offline). It does not block and is safe for concurrent
// use.
func (b MemoryBlock) Online() bool {
	return b.State == "online" || b.State == "going-offline"
}

// BlockSize returns the memory block size in bytes, read once by NewFS; 0 when the tree has no
// memory directory. It does not block and is safe for concurrent use.
func (fsys FS) BlockSize() uint64 { return fsys.blockSize }

// HasMemory reports whether the tree has devices/system/memory, as seen by NewFS (a kernel
// without memory hotplug support has none). It does not block and is safe for concurrent use.
func (fsys FS) HasMemory() bool { return fsys.blockSize != 0 }

// MemoryBlockIndexes lists the memory blocks present, sorted, without reading them: one directory
// read, cheap enough for every scrape. nil and no error when the tree has no memory directory.
// It is safe for concurrent use.
func (fsys FS) MemoryBlockIndexes() ([]int, error) {
	if !fsys.HasMemory() {
		return nil, nil
	}
	dir := fsys.Path(memoryDir)
	buf := make([]byte, scratchSize)
	names, err := readDirNames(dir, buf)
	if err != nil {
		return nil, fmt.Errorf("sysfs: read %s: %w", dir, err)
	}
	nums := make([]int, 0, len(names))
	for _, name := range names {
		if n, ok := numbered(name, "memory"); ok {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	return nums, nil
}

// MemoryBlocks returns every memory block with a memoryN directory (N decimal digits only),
// sorted by index; nil and no error when the tree has no memory directory. A block that vanishes
// between the listing and its read (a hot-remove racing the scan) is left out, not an error.
// MemoryBlocks blocks on file reads, a few per block; on a large machine it reads with up to 8
// goroutines (bounded by GOMAXPROCS), all finished when it returns. It is safe for concurrent
// use.
func (fsys FS) MemoryBlocks() ([]MemoryBlock, error) {
	nums, err := fsys.MemoryBlockIndexes()
	if err != nil || nums == nil {
		return nil, err
	}
	workers := min(runtime.GOMAXPROCS(0), maxScanners, len(nums)/minScanBlocks)
	return fsys.memoryBlocks(nums, workers)
}

// A scan of many memory blocks is shared among goroutines: each block costs 3 system calls (open,
// read and close state) and 3 more for valid_zones when online, 4 more when no node directory
// links it (its own directory is listed for its node), and a machine with 1 TiB of memory in
// 128 MiB blocks has 8,192 blocks.
const (
	maxScanners   = 8   // goroutines per scan at most
	minScanBlocks = 512 // blocks per goroutine at least: fewer would not repay its start
)

// memoryBlocks reads the blocks numbered nums, in order, leaving out those whose directory is
// gone, with workers goroutines (one when workers < 2), each reading a contiguous share of nums.
// When blocks cannot be read, it returns the error of one of them.
func (fsys FS) memoryBlocks(nums []int, workers int) ([]MemoryBlock, error) {
	out := make([]MemoryBlock, len(nums))
	gone := make([]bool, len(nums))
	workers = max(1, min(workers, len(nums)))
	errs := make([]error, workers)
	var failed atomic.Bool // stops the other goroutines once one has failed
	links := fsys.nodeLinks("memory")
	scan := func(w int) {
		buf := make([]byte, scratchSize)
		md, links := linkedDir(fsys.Path(memoryDir), links) // this goroutine's
		if links != nil {
			defer md.close()
		}
		for i := len(nums) * w / workers; i < len(nums)*(w+1)/workers && !failed.Load(); i++ {
			var b MemoryBlock
			var err error
			if node, ok := links[nums[i]]; ok {
				b, err = fsys.readLinkedMemoryBlock(md, nums[i], node, buf)
			} else {
				b, err = fsys.readMemoryBlock(nums[i], buf, true)
			}
			if err != nil {
				if vanished(err, fsys.MemoryBlockPath(nums[i])) {
					gone[i] = true
					continue
				}
				errs[w] = err
				failed.Store(true)
				return
			}
			out[i] = b
		}
	}
	if workers == 1 {
		scan(0)
	} else {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() { scan(w) })
		}
		wg.Wait()
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	j := 0
	for i := range out {
		if !gone[i] {
			out[j] = out[i]
			j++
		}
	}
	return out[:j], nil
}

// MemoryBlock returns memory block n. The error wraps fs.ErrNotExist when memoryN does not exist,
// also when it vanishes during the read (a hot-remove) or the tree has no memory directory; a
// negative n is an error. MemoryBlock blocks on file reads; it is safe for concurrent use.
func (fsys FS) MemoryBlock(n int) (MemoryBlock, error) {
	if n < 0 {
		return MemoryBlock{}, fmt.Errorf("sysfs: invalid memory block number %d", n)
	}
	if !fsys.HasMemory() {
		return MemoryBlock{}, fmt.Errorf("sysfs: read %s: %w", fsys.MemoryBlockPath(n), fs.ErrNotExist)
	}
	var buf [scratchSize]byte
	b, err := fsys.readMemoryBlock(n, buf[:], true)
	return b, notExistIfVanished(err, fsys.MemoryBlockPath(n))
}

// MemoryBlockBasics is MemoryBlock without valid_zones (ValidZones stays ""), for code that
// reads a block while it may still be being hot-added: Linux 6.1 dereferences NULL computing
// the zones of such a block (see MemoryBlock.ValidZones). The same errors; it blocks on file
// reads and is safe for concurrent use.
func (fsys FS) MemoryBlockBasics(n int) (MemoryBlock, error) {
	if n < 0 {
		return MemoryBlock{}, fmt.Errorf("sysfs: invalid memory block number %d", n)
	}
	if !fsys.HasMemory() {
		return MemoryBlock{}, fmt.Errorf("sysfs: read %s: %w", fsys.MemoryBlockPath(n), fs.ErrNotExist)
	}
	var buf [scratchSize]byte
	b, err := fsys.readMemoryBlock(n, buf[:], false)
	return b, notExistIfVanished(err, fsys.MemoryBlockPath(n))
}

// readMemoryBlock reads block n, using buf as scratch space of scratchSize bytes. It lists
// memoryN once, which gives the node link and tells which optional files exist, then reads state
// (required) and, with zones, valid_zones (when listed and the block is online). phys_index is N
// (see MemoryBlock.PhysIndex) and removable is 1 for every block since Linux 5.8: neither is read.
func (fsys FS) readMemoryBlock(n int, buf []byte, zones bool) (MemoryBlock, error) {
	p := fsys.MemoryBlockPath(n)
	d, err := openDir(p)
	if err != nil {
		return MemoryBlock{}, fmt.Errorf("sysfs: read %s: %w", p, err)
	}
	defer d.close()
	names, err := d.names(buf)
	if err != nil {
		return MemoryBlock{}, fmt.Errorf("sysfs: read %s: %w", p, err)
	}
	blk := MemoryBlock{Index: n, Size: fsys.blockSize, Node: nodeOf(names)}

	// read reads an attribute of the block into buf; the result is valid until the next read.
	read := func(name string) ([]byte, error) {
		b, err := d.read(name, buf)
		if err != nil {
			return nil, fmt.Errorf("sysfs: read %s/%s: %w", p, name, err)
		}
		return b, nil
	}

	b, err := read("state")
	if err != nil {
		return MemoryBlock{}, err
	}
	blk.State = attrString(b)
	if err := fsys.place(&blk, p); err != nil {
		return MemoryBlock{}, err
	}

	if zones && blk.State == "online" && has(names, "valid_zones") {
		if b, err = read("valid_zones"); err != nil {
			return MemoryBlock{}, err
		}
		blk.ValidZones = attrString(b)
	}
	return blk, nil
}

// place sets the physical index and start of blk, whose directory is p, from its Index.
func (fsys FS) place(blk *MemoryBlock, p string) error {
	blk.PhysIndex = uint64(blk.Index)
	hi, lo := bits.Mul64(blk.PhysIndex, fsys.blockSize)
	if hi != 0 {
		return fmt.Errorf("sysfs: %s: %#x blocks of %#x bytes overflow the address space", p, blk.PhysIndex, fsys.blockSize)
	}
	blk.PhysStart = lo
	return nil
}

// readLinkedMemoryBlock is readMemoryBlock (with zones) of block n, which a node directory
// links to node: it reads state and valid_zones through md, the memory directory, without
// listing the block's directory.
func (fsys FS) readLinkedMemoryBlock(md dir, n, node int, buf []byte) (MemoryBlock, error) {
	name := deviceName("memory", n)
	p := func() string { return fsys.MemoryBlockPath(n) }
	blk := MemoryBlock{Index: n, Size: fsys.blockSize, Node: node}
	b, absent, err := readIn(md, name, "state", buf, p)
	if err == nil && absent {
		err = fs.ErrNotExist
	}
	if err != nil {
		return MemoryBlock{}, fmt.Errorf("sysfs: read %s/state: %w", p(), err)
	}
	blk.State = attrString(b)
	if err := fsys.place(&blk, p()); err != nil {
		return MemoryBlock{}, err
	}
	if blk.State == "online" {
		b, absent, err := readIn(md, name, "valid_zones", buf, p)
		if err != nil {
			return MemoryBlock{}, fmt.Errorf("sysfs: read %s/valid_zones: %w", p(), err)
		}
		if !absent {
			blk.ValidZones = attrString(b)
		}
	}
	return blk, nil
}

// AutoOnlineBlocks returns memory/auto_online_blocks, trimmed: what the kernel does with a
// hot-added block ("online", "offline", "online_movable" or "online_kernel"). The error wraps
// fs.ErrNotExist when the file (or the memory directory) is absent. AutoOnlineBlocks blocks on a
// file read; it is safe for concurrent use.
func (fsys FS) AutoOnlineBlocks() (string, error) {
	p := fsys.Path(memoryDir, "auto_online_blocks")
	s, err := readString(p)
	if err != nil {
		return "", fmt.Errorf("sysfs: read %s: %w", p, err)
	}
	return s, nil
}

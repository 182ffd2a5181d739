package memdev

import (
	"bytes"
	"fmt"
	"strconv"
)

// Resource is one line of /proc/iomem: a physical address range [Start, End] (End inclusive,
// as the kernel prints it), its name, and its depth in the resource tree (0: top level).
type Resource struct {
	Start, End uint64
	Name       string
	Depth      int
	// Parent is the index in the parsed slice of the enclosing resource, -1 at the top level.
	Parent int
}

// maxIOMem bounds what ParseIOMem accepts: /proc/iomem is a few KiB even on large machines.
const maxIOMem = 4 << 20

// ParseIOMem parses the text of /proc/iomem: lines of "START-END : NAME" in hex, indented by two
// spaces per level of nesting. It returns the resources in file order, each with the index of
// its parent. Any line that does not have that shape is an error naming the line, so a file that
// is not /proc/iomem is never half-read. Addresses read as zero (a reader without
// CAP_SYS_ADMIN sees only zeros) are not an error here; the caller decides. ParseIOMem does not
// block and is safe for concurrent use.
func ParseIOMem(data []byte) ([]Resource, error) {
	if len(data) > maxIOMem {
		return nil, fmt.Errorf("iomem: %d bytes; want at most %d", len(data), maxIOMem)
	}
	var out []Resource
	var stack []int // indexes of the open resources, one per depth
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if len(line) == 0 && len(data) == 0 {
			break
		}
		r, err := parseIOMemLine(line)
		if err != nil {
			return nil, fmt.Errorf("iomem: line %d: %w", lineNo, err)
		}
		if r.Depth > len(stack) {
			return nil, fmt.Errorf("iomem: line %d: indented %d levels under %d open ones", lineNo, r.Depth, len(stack))
		}
		stack = stack[:r.Depth]
		r.Parent = -1
		if r.Depth > 0 {
			r.Parent = stack[r.Depth-1]
		}
		stack = append(stack, len(out))
		out = append(out, r)
	}
	return out, nil
}

// parseIOMemLine parses one line without its newline.
func parseIOMemLine(line []byte) (Resource, error) {
	indent := 0
	for indent < len(line) && line[indent] == ' ' {
		indent++
	}
	if indent%2 != 0 {
		return Resource{}, fmt.Errorf("odd indentation of %d spaces", indent)
	}
	rest := line[indent:]
	rng, name, ok := bytes.Cut(rest, []byte(" : "))
	if !ok {
		return Resource{}, fmt.Errorf("%q: want START-END : NAME", truncate(rest))
	}
	a, b, ok := bytes.Cut(rng, []byte{'-'})
	if !ok {
		return Resource{}, fmt.Errorf("%q: want START-END : NAME", truncate(rest))
	}
	start, err1 := strconv.ParseUint(string(a), 16, 64)
	end, err2 := strconv.ParseUint(string(b), 16, 64)
	if err1 != nil || err2 != nil || len(a) == 0 || len(b) == 0 || a[0] == '+' || b[0] == '+' {
		return Resource{}, fmt.Errorf("%q: the range is not two hex numbers", truncate(rng))
	}
	if end < start {
		return Resource{}, fmt.Errorf("range %x-%x ends before it starts", start, end)
	}
	return Resource{Start: start, End: end, Name: string(name), Depth: indent / 2}, nil
}

// truncate shortens b for an error message.
func truncate(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

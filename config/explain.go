package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The YAML decoder's messages for a key the configuration does not have, for a value of the wrong
// type and for a key given twice. A value is cut to 7 bytes and "..." when it is longer than 10.
var (
	unknownKeyRE   = regexp.MustCompile("^line ([0-9]+): field (.+) not found in type (\\S+)$")
	wrongTypeRE    = regexp.MustCompile("^line ([0-9]+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
	duplicateKeyRE = regexp.MustCompile(`^line ([0-9]+): mapping key (".*") already defined at line ([0-9]+)$`)
	plainKeyRE     = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// explain turns an error of the YAML decoder, given the document it decoded, into one line in
// the terms of the file: the line, the key's path (callbacks[0].exec.timeout), and what is wrong
// and what to write instead, rather than the Go types the document was decoded into.
func explain(doc []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return errors.New(oneLine(err.Error())) // a syntax error: "line 3: did not find expected key"
	}
	var root yaml.Node
	if yaml.NewDecoder(bytes.NewReader(doc)).Decode(&root) != nil {
		root = yaml.Node{}
	}
	var nodes []located
	walk(&root, "", reflect.TypeFor[Config](), &nodes)
	msg := explainOne(te.Errors[0], nodes)
	if more := len(te.Errors) - 1; more == 1 {
		msg += " (and 1 more problem)"
	} else if more > 1 {
		msg += fmt.Sprintf(" (and %d more problems)", more)
	}
	return errors.New(msg)
}

// explainOne rewrites one of the decoder's messages, or returns it as it is when it is none of
// those above.
func explainOne(msg string, nodes []located) string {
	if m := unknownKeyRE.FindStringSubmatch(msg); m != nil {
		line, key, typ := atoi(m[1]), m[2], m[3]
		where := ""
		if k := find(nodes, line, func(l located) bool { return l.key && l.node.Value == key }); k != nil && k.path != "" {
			where = " in " + k.path
		}
		return fmt.Sprintf("line %d: unknown key %q%s (%s)", line, key, where, suggest(key, knownKeys[typ]))
	}
	if m := duplicateKeyRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("line %s: key %s given twice (first at line %s)", m[1], m[2], m[3])
	}
	m := wrongTypeRE.FindStringSubmatch(msg)
	if m == nil {
		return oneLine(msg)
	}
	line, tag, value, typ := atoi(m[1]), m[2], strings.TrimSuffix(m[3], "..."), strings.TrimPrefix(m[4], "*")
	v := find(nodes, line, func(l located) bool {
		if l.key || l.typ == nil || strings.TrimPrefix(l.typ.String(), "*") != typ {
			return false
		}
		switch l.node.Kind {
		case yaml.SequenceNode:
			return tag == "!!seq"
		case yaml.MappingNode:
			return tag == "!!map"
		case yaml.ScalarNode:
			return tag != "!!seq" && tag != "!!map" && strings.HasPrefix(l.node.Value, value)
		}
		return false
	})
	what, path := fmt.Sprintf("%q", m[3]), ""
	switch {
	case tag == "!!seq":
		what = "a list"
	case tag == "!!map":
		what = "a mapping"
	case v != nil:
		what, value = strconv.Quote(v.node.Value), v.node.Value
	}
	if v != nil && v.path != "" {
		path = v.path + ": "
	}
	return fmt.Sprintf("line %d: %s%s is not %s", line, path, what, expected(typ, value, tag))
}

// expected describes what a value decoded into the Go type typ must be, in the file's terms, with
// how to write value so when that can be told.
func expected(typ, value, tag string) string {
	switch {
	case typ == "time.Duration":
		if _, err := strconv.ParseUint(value, 10, 64); err == nil && tag != "!!seq" && tag != "!!map" {
			return "a duration (write " + value + "s)"
		}
		return "a duration (write it like 30s, 1m or 500ms)"
	case typ == "bool":
		return "true or false"
	case typ == "config.Percent":
		return "a whole number of percent (write 301 for 3.01:1)"
	case strings.HasPrefix(typ, "int") || strings.HasPrefix(typ, "uint"):
		return "a whole number"
	case typ == "string":
		return "a string (quote it: \"...\")"
	case typ == "[]string":
		if f := strings.Fields(value); len(f) > 0 && tag == "!!str" {
			q := make([]string, len(f))
			for i, s := range f {
				q[i] = strconv.Quote(s)
			}
			return "a list (write [" + strings.Join(q, ", ") + "]: it is never given to a shell)"
		}
		return "a list of strings (write [\"a\", \"b\"])"
	case strings.HasPrefix(typ, "[]"):
		return "a list (items starting with \"- \")"
	case strings.HasPrefix(typ, "map["):
		return "a mapping (key: value lines)"
	case knownKeys[typ] != nil:
		return "a mapping of " + strings.Join(knownKeys[typ], ", ")
	}
	return "of the type expected here"
}

// located is a node of the document with the path of keys and indexes that leads to it, and
// the Go type it is decoded into (nil where the configuration has no such key).
type located struct {
	node *yaml.Node
	path string // callbacks[0].exec; for a key, the path of its mapping
	key  bool
	typ  reflect.Type
}

// walk lists n and the nodes under it, in document order, with their paths and the types they
// are decoded into; t is n's (nil: unknown). It does not follow aliases: a node is listed where
// it is written, once.
func walk(n *yaml.Node, path string, t reflect.Type, out *[]located) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			*out = append(*out, located{node: c, path: path, typ: t})
			walk(c, path, t, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			name := k.Value
			if !plainKeyRE.MatchString(name) {
				name = strconv.Quote(name) // a key of the file, not of the configuration: shown as written, on one line
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			vt := valueType(t, k.Value)
			*out = append(*out, located{node: k, path: path, key: true}, located{node: v, path: p, typ: vt})
			walk(v, p, vt, out)
		}
	case yaml.SequenceNode:
		var et reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			et = t.Elem()
		}
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			*out = append(*out, located{node: c, path: p, typ: et})
			walk(c, p, et, out)
		}
	}
}

// valueType returns the type of the value of key in a mapping decoded into t, or nil.
func valueType(t reflect.Type, key string) reflect.Type {
	switch {
	case t == nil:
		return nil
	case t.Kind() == reflect.Map:
		return t.Elem()
	case t.Kind() != reflect.Struct:
		return nil
	}
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key && name != "-" {
			return f.Type
		}
	}
	return nil
}

// find returns the first node on line that ok accepts, or nil.
func find(nodes []located, line int, ok func(located) bool) *located {
	for i := range nodes {
		if nodes[i].node.Line == line && ok(nodes[i]) {
			return &nodes[i]
		}
	}
	return nil
}

// knownKeys holds the keys of each mapping of the configuration, by the name of the Go type the
// decoder names in its messages (config.Exec).
var knownKeys = func() map[string][]string {
	keys := map[string][]string{}
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || keys[t.String()] != nil || t.PkgPath() != reflect.TypeFor[Config]().PkgPath() {
			return
		}
		var names []string
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			names = append(names, name)
		}
		slices.Sort(names)
		keys[t.String()] = names
		for f := range t.Fields() {
			add(f.Type)
		}
	}
	add(reflect.TypeFor[Config]())
	return keys
}()

// suggest returns "did you mean "x"?" for the known key closest to key, when one is close, else
// the list of the known keys.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := distance(strings.ToLower(key), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		for _, k := range known {
			// An abbreviation: cmd for command.
			if len(key) >= 3 && key[0] == k[0] && isSubsequence(strings.ToLower(key), k) {
				best = k
				break
			}
		}
	}
	switch {
	case best != "":
		return fmt.Sprintf("did you mean %q?", best)
	case len(known) > 0:
		return "the keys here are " + strings.Join(known, ", ")
	}
	return "no key is expected here"
}

// distance is the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// isSubsequence reports whether the bytes of s appear in t in order.
func isSubsequence(s, t string) bool {
	for i := 0; i < len(s); i++ {
		j := strings.IndexByte(t, s[i])
		if j < 0 {
			return false
		}
		t = t[j+1:]
	}
	return true
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

package kmemleak

import (
	"fmt"
	"sort"
	"strings"
)

// DefaultDepth is how many frames past the allocator make a signature:
// enough to tell callers apart, few enough that objects leaked on one path
// from different syscalls or work items still group together.
const DefaultDepth = 8

// Group is the objects leaked from one code path.
type Group struct {
	Title string   `json:"title"`
	Count int      `json:"count"`
	Bytes uint64   `json:"bytes"`
	Comms []string `json:"comms"`
	// Frames is the signature the group is keyed on: normalized function
	// names, allocator frames left out, with " [module]" for modules.
	Frames []string `json:"frames"`
	// Kinds lists "phys" and "percpu" when such objects are in the group.
	Kinds []string `json:"kinds,omitempty"`
	// Boot is set when every object was allocated by swapper, that is
	// during boot: such reports are usually false positives.
	Boot bool `json:"boot,omitempty"`
}

// Report is a grouped kmemleak report.
type Report struct {
	Objects int    `json:"objects"`
	Bytes   uint64 `json:"bytes"`
	// Duplicates counts objects seen more than once (several reads of
	// the kmemleak file in one input) and counted once.
	Duplicates int     `json:"duplicates"`
	Groups     []Group `json:"groups"`
}

// NormalizeFunction strips what varies between builds of one function:
// GCC's clones (.isra.N, .constprop.N, .part.N, .cold), clang's .llvm.N and
// the _noprof names of allocation profiling (6.10+). C identifiers cannot
// contain a dot, so everything from the first one is a suffix.
func NormalizeFunction(name string) string {
	if i := strings.IndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	return strings.TrimSuffix(name, "_noprof")
}

// allocatorWords mark the frames of the allocator itself, which every
// report starts with and which say nothing about who leaked.
var allocatorWords = []string{
	"kmemleak", "kmem", "slab", "slub", "alloc", "strdup", "strndup",
	"memdup", "kasprintf", "kvasprintf",
}

// IsAllocator reports whether a normalized function name belongs to the
// allocator.
func IsAllocator(fn string) bool {
	for _, w := range allocatorWords {
		if strings.Contains(fn, w) {
			return true
		}
	}
	return false
}

// frameName is how a frame appears in a signature. An unnamed address
// differs with every boot and every hashing key, so all of them are "?".
func frameName(f Frame) string {
	name := "?"
	if f.Function != "" {
		name = NormalizeFunction(f.Function)
	}
	if f.Module != "" {
		name += " [" + f.Module + "]"
	}
	return name
}

// Signature returns the frames an object is grouped by: up to depth
// normalized frames after the leading allocator frames. When the whole
// stack is allocator frames the last one stands for it. The crc is never
// part of it: it checksums the contents, not the stack.
func Signature(o Object, depth int) []string {
	if depth <= 0 {
		depth = DefaultDepth
	}
	fr := o.Frames
	i := 0
	for i < len(fr) && fr[i].Function != "" && IsAllocator(NormalizeFunction(fr[i].Function)) {
		i++
	}
	if i == len(fr) && len(fr) > 0 {
		i = len(fr) - 1
	}
	sig := make([]string, 0, depth)
	for _, f := range fr[i:] {
		if len(sig) == depth {
			break
		}
		sig = append(sig, frameName(f))
	}
	return sig
}

// Title names a group the way syzbot names memory leak bugs.
// Addresses the kernel could not name are passed over: a module without
// symbols still has a named caller further down.
func Title(sig []string) string {
	if len(sig) == 0 {
		return "memory leak with no backtrace"
	}
	for _, f := range sig {
		if name, _, _ := strings.Cut(f, " ["); name != "?" {
			return "memory leak in " + name
		}
	}
	return "memory leak in unnamed code"
}

// GroupObjects dedupes objects, groups them by signature and ranks the groups by
// object count, then bytes: a path that leaked many times is the most
// reproducible bug, whatever the sizes.
func GroupObjects(objs []Object, depth int) Report {
	type key struct {
		kind    string
		addr    uint64
		jiffies uint64
		size    uint64
	}
	type acc struct {
		g     *Group
		comms map[string]bool
		kinds map[string]bool
		boot  bool
	}
	var rep Report
	// kmemleak reports an object on every read until it is cleared, so
	// an allocation (address and jiffies) is counted once; a read cut
	// short leaves a copy with fewer frames, so the fullest copy wins.
	seen := map[key]int{}
	var uniq []Object
	for _, o := range objs {
		k := key{o.Kind, o.Address, o.Jiffies, o.Size}
		if i, ok := seen[k]; ok {
			rep.Duplicates++
			if len(o.Frames) > len(uniq[i].Frames) {
				uniq[i] = o
			}
			continue
		}
		seen[k] = len(uniq)
		uniq = append(uniq, o)
	}
	groups := map[string]*acc{}
	var order []string
	for _, o := range uniq {
		rep.Objects++
		rep.Bytes += o.Size
		sig := Signature(o, depth)
		id := strings.Join(sig, "\n")
		a := groups[id]
		if a == nil {
			a = &acc{
				g:     &Group{Title: Title(sig), Frames: sig},
				comms: map[string]bool{},
				kinds: map[string]bool{},
				boot:  true,
			}
			groups[id] = a
			order = append(order, id)
		}
		a.g.Count++
		a.g.Bytes += o.Size
		if o.Comm != "" {
			a.comms[o.Comm] = true
		}
		if o.Kind != "" {
			a.kinds[o.Kind] = true
		}
		if !strings.HasPrefix(o.Comm, "swapper") {
			a.boot = false
		}
	}
	for _, id := range order {
		a := groups[id]
		a.g.Comms = sortedKeys(a.comms)
		if len(a.kinds) > 0 {
			a.g.Kinds = sortedKeys(a.kinds)
		}
		a.g.Boot = a.boot
		rep.Groups = append(rep.Groups, *a.g)
	}
	sort.SliceStable(rep.Groups, func(i, j int) bool {
		a, b := rep.Groups[i], rep.Groups[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Bytes != b.Bytes {
			return a.Bytes > b.Bytes
		}
		if a.Title != b.Title {
			return a.Title < b.Title
		}
		return strings.Join(a.Frames, "\n") < strings.Join(b.Frames, "\n")
	})
	if rep.Groups == nil {
		rep.Groups = []Group{}
	}
	return rep
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// FormatBytes prints a byte count the way the text reports do.
func FormatBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTP"[exp])
}

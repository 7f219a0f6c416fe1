// Package suppress decides which leaks a report should not count: leaks the
// user has declared known in a suppression file, and one-time allocations of
// glibc, ld.so and libstdc++ that are not the program's to free.
//
// Three file formats are read, each detected from the first line that is
// neither blank nor a comment:
//
//   - valgrind's (a line "{" starts a block): only Memcheck:Leak blocks are
//     used; blocks for other error kinds are skipped and counted by
//     [Set.Ignored]. Frame lines fun:, obj:, src: and "..." are matched, in
//     order, against a prefix of the stack as valgrind saw it, whose first
//     frame is the allocator itself (malloc, operator new, ...). A report's
//     stacks start at the allocator's caller, so the allocator frame is
//     implied: when the first frame line is "..." or matches an allocator, it
//     is matched against that implied frame; otherwise the first frame line
//     is matched against the allocator's caller, which lets hand-written
//     blocks omit "fun:malloc". match-leak-kinds may also name "unfreed".
//   - LSan's (lines "leak:TEMPLATE"): a leak matches when any frame's
//     function, object path or source path contains the template, '*' being
//     a wildcard, '^' anchoring the start and '$' the end. Lines of other
//     sanitizer types are skipped and counted by [Set.Ignored].
//   - libleak's own (lines starting "suppress"): key=value fields name=,
//     kind=, fun=, obj=, file= and depth=; a leak matches when one frame
//     among the innermost depth frames (all by default) matches every one of
//     fun=, obj= and file=, which are whole-string wildcard patterns. obj=
//     and file= patterns without a '/' are matched against the base name.
//
// Function patterns are matched against the symbolized (demangled) name and,
// when [Set.RawName] is set, against the symbol as stored in the object,
// which for C++ is its mangled name as valgrind writes it. ELF symbol
// versions ("@@GLIBC_2.34") are ignored. An unknown function is "???" to
// valgrind patterns, as in valgrind, and the empty string to libleak's.
//
// docs/suppressions.md describes the formats for users, with examples.
package suppress

import (
	"bytes"
	"fmt"
	"os"

	"libleak/analyzer/report"
)

// Formats of suppression files, as reported in [Usage.Format].
const (
	FormatValgrind = "valgrind"
	FormatLSan     = "lsan"
	FormatLibleak  = "libleak"
)

// Set is an ordered list of suppressions. The first one that matches a leak
// is the one credited with it. Match and Used may be called concurrently.
type Set struct {
	// RawName, when set, returns a frame's symbol name as stored in its
	// object (mangled, for C++), or "" when unknown. Report frames carry
	// only the demangled name, and valgrind files name C++ functions in
	// mangled form.
	RawName func(f report.Frame) string

	supps   []*supp
	ignored int
}

// Usage tells what one suppression did.
type Usage struct {
	Name   string // the suppression's name, as put in Leak.Suppressed
	Source string // "file:line" where it is defined; "<default>:N" for the built-in ones
	Format string // FormatValgrind, FormatLSan or FormatLibleak
	Sites  int    // leak sites it matched
	Blocks uint64 // blocks of those sites
	Bytes  uint64 // bytes of those sites
}

// Counts totals the leak sites [Set.Filter] suppressed.
type Counts struct {
	Sites  int
	Blocks uint64
	Bytes  uint64
}

// Load reads suppression files, each in any of the three formats, into one
// Set in the order given. No paths gives an empty Set.
func Load(paths ...string) (*Set, error) {
	s := &Set{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("suppressions: %w", err)
		}
		if err := s.parse(p, data); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Parse reads one suppression file's contents; name is used in errors and in
// [Usage.Source].
func Parse(name string, data []byte) (*Set, error) {
	s := &Set{}
	if err := s.parse(name, data); err != nil {
		return nil, err
	}
	return s, nil
}

// Merge returns a Set holding the suppressions of all sets, in order. The
// suppressions are shared, not copied, so matches made through the merged
// Set are also seen by the Used of the sets it was made from.
func Merge(sets ...*Set) *Set {
	m := &Set{}
	for _, s := range sets {
		if s == nil {
			continue
		}
		if m.RawName == nil {
			m.RawName = s.RawName
		}
		m.supps = append(m.supps, s.supps...)
		m.ignored += s.ignored
	}
	return m
}

// Len is the number of leak suppressions in the Set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.supps)
}

// Ignored is the number of entries skipped because they suppress something
// other than leaks (valgrind blocks such as Memcheck:Addr4, sanitizer lines
// such as race:).
func (s *Set) Ignored() int {
	if s == nil {
		return 0
	}
	return s.ignored
}

// Match returns the name of the first suppression matching the leak's kind
// and stack, and credits that suppression with the leak's blocks and bytes.
func (s *Set) Match(l *report.Leak) (name string, ok bool) {
	if s == nil || l == nil {
		return "", false
	}
	for _, sp := range s.supps {
		if !sp.kindOK(l.Kind) || !sp.match(s, l) {
			continue
		}
		sp.sites.Add(1)
		sp.blocks.Add(l.Blocks)
		sp.bytes.Add(l.Bytes)
		return sp.name, true
	}
	return "", false
}

// Filter sets Suppressed on every leak of r a suppression matches and
// returns what it suppressed. Leaks already marked suppressed are left
// alone and not counted again. r.Summary is not changed: whether suppressed
// memory still counts there is the caller's decision.
func (s *Set) Filter(r *report.Report) Counts {
	var c Counts
	if r == nil {
		return c
	}
	for i := range r.Leaks {
		l := &r.Leaks[i]
		if l.Suppressed != "" {
			continue
		}
		if name, ok := s.Match(l); ok {
			l.Suppressed = name
			c.Sites++
			c.Blocks += l.Blocks
			c.Bytes += l.Bytes
		}
	}
	return c
}

// Used reports every suppression of the Set in order, with what it has
// matched so far; those with Sites == 0 never matched.
func (s *Set) Used() []Usage {
	if s == nil {
		return nil
	}
	out := make([]Usage, len(s.supps))
	for i, sp := range s.supps {
		out[i] = Usage{Name: sp.name, Source: sp.source, Format: sp.format,
			Sites: int(sp.sites.Load()), Blocks: sp.blocks.Load(), Bytes: sp.bytes.Load()}
	}
	return out
}

// Defaults returns a new Set of the built-in suppressions (default.supp in
// this package, valgrind format). Each call returns fresh usage counts.
func Defaults() *Set {
	s, err := Parse(defaultSource, defaultSupp)
	if err != nil {
		// default.supp is compiled in and parsed by the tests, so this
		// is a build defect, not bad input.
		panic(err)
	}
	return s
}

// splitLines splits on '\n', dropping a '\r' before it, so files written on
// any system read alike.
func splitLines(data []byte) [][]byte {
	lines := bytes.Split(data, []byte("\n"))
	if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
		lines = lines[:n-1]
	}
	for i, l := range lines {
		lines[i] = bytes.TrimSuffix(l, []byte("\r"))
	}
	return lines
}

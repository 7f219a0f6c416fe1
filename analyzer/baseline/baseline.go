// Package baseline lets a CI leak gate accept the leaks a project has today
// and fail only on new ones: --write-baseline FILE records the leak sites of
// a run, and --baseline FILE later tells which sites are already known.
//
// A site is identified by its stack, reduced to what survives a rebuild: the
// function names and object base names of the innermost [DefaultDepth]
// symbolized frames. Addresses (ASLR, relinking) and line numbers (any
// unrelated edit above the allocation) are left out, as are frames whose
// function is unknown, whose address-derived placeholder would change with
// every build. Object names lose their version suffix ("libfoo.so.1.2" is
// "libfoo.so") and function names lose their ELF symbol version
// ("dlopen@@GLIBC_2.34") and compiler clone suffixes (".constprop.0",
// ".isra.0", ".part.0", ".cold", " [clone .constprop.0]"), which change with
// optimization decisions rather than with the code. A stack with no
// symbolized frame falls back to its object names.
//
// The file is JSON:
//
//	{
//	  "format": "libleak-baseline",
//	  "version": 1,
//	  "depth": 8,
//	  "sites": [
//	    {
//	      "stack": ["app!make_node", "app!make_list", "app!main", "libc.so!__libc_start_call_main"],
//	      "kinds": ["definite"],
//	      "bytes": 48,
//	      "blocks": 3,
//	      "location": "list.c:12"
//	    }
//	  ]
//	}
//
// Each stack entry is "object!function", innermost first; stack alone
// identifies a site, and the other fields are there for people reviewing a
// baseline change. depth records how many frames the stacks were cut to, so
// a baseline keeps working if the default changes. Sites are sorted, so a
// baseline regenerated from an unchanged program is byte-identical.
// Readers reject a newer version; version 1 readers ignore unknown fields.
package baseline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"libleak/analyzer/report"
)

// Format and Version identify the file.
const (
	Format  = "libleak-baseline"
	Version = 1
)

// DefaultDepth is how many symbolized frames identify a site: enough to
// tell apart callers of a shared allocation helper, few enough that
// refactoring far from the allocation keeps the site.
const DefaultDepth = 8

// maxDepth bounds the depth a file may ask for.
const maxDepth = 256

// Baseline is a set of known leak sites.
type Baseline struct {
	depth int
	keys  map[string]bool
}

type file struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Depth   int    `json:"depth"`
	Sites   []site `json:"sites"`
}

type site struct {
	Stack    []string `json:"stack"`
	Kinds    []string `json:"kinds,omitempty"`
	Bytes    uint64   `json:"bytes"`
	Blocks   uint64   `json:"blocks"`
	Location string   `json:"location,omitempty"`
}

// Stack returns the reduced stack that identifies the leak's site: up to
// depth "object!function" entries, innermost first.
func Stack(l *report.Leak, depth int) []string {
	var out []string
	for _, f := range l.Frames {
		if len(out) == depth {
			return out
		}
		if fn := function(f.Function); fn != "" {
			out = append(out, object(f.Module)+"!"+fn)
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, f := range l.Frames {
		if len(out) == depth {
			break
		}
		out = append(out, object(f.Module)+"!?")
	}
	return out
}

// Key is the string a site is matched by at DefaultDepth: its Stack joined
// with newlines, which appear in no symbol or path.
func Key(l *report.Leak) string {
	return strings.Join(Stack(l, DefaultDepth), "\n")
}

func keyAt(l *report.Leak, depth int) string {
	return strings.Join(Stack(l, depth), "\n")
}

var (
	cloneSuffix    = regexp.MustCompile(`( \[clone [^\]]*\])+$`)
	compilerSuffix = regexp.MustCompile(`(\.(constprop|isra|part|cold|lto_priv|localalias|llvm)(\.[0-9]+)?)+$`)
)

func function(name string) string {
	if name == "" || name == "??" || name == "???" {
		return ""
	}
	if i := strings.IndexByte(name, '@'); i > 0 {
		name = name[:i]
	}
	name = cloneSuffix.ReplaceAllString(name, "")
	return compilerSuffix.ReplaceAllString(name, "")
}

func object(module string) string {
	if module == "" || module == "??" {
		return "?"
	}
	base := path.Base(module)
	if i := strings.Index(base, ".so."); i >= 0 {
		base = base[:i+len(".so")]
	}
	return base
}

// Write records the leak sites of r that are not suppressed. Leaks sharing
// a site (several processes, several kinds) make one entry with their
// totals.
func Write(w io.Writer, r *report.Report) error {
	bySite := map[string]*site{}
	kinds := map[string]map[string]bool{}
	if r != nil {
		for i := range r.Leaks {
			l := &r.Leaks[i]
			if l.Suppressed != "" {
				continue
			}
			k := Key(l)
			s := bySite[k]
			if s == nil {
				s = &site{Stack: Stack(l, DefaultDepth), Location: location(l)}
				if s.Stack == nil {
					s.Stack = []string{}
				}
				bySite[k] = s
				kinds[k] = map[string]bool{}
			}
			s.Bytes += l.Bytes
			s.Blocks += l.Blocks
			if l.Kind != "" {
				kinds[k][l.Kind] = true
			}
		}
	}
	keys := make([]string, 0, len(bySite))
	for k := range bySite {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	f := file{Format: Format, Version: Version, Depth: DefaultDepth, Sites: []site{}}
	for _, k := range keys {
		s := bySite[k]
		for kind := range kinds[k] {
			s.Kinds = append(s.Kinds, kind)
		}
		sort.Strings(s.Kinds)
		f.Sites = append(f.Sites, *s)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(f)
}

// location is the first source position of the stack, for reviewers.
func location(l *report.Leak) string {
	for _, f := range l.Frames {
		if f.File != "" {
			if f.Line > 0 {
				return fmt.Sprintf("%s:%d", path.Base(f.File), f.Line)
			}
			return path.Base(f.File)
		}
	}
	return ""
}

// Read loads a baseline file.
func Read(name string) (*Baseline, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return Parse(name, data)
}

// Parse decodes a baseline file's contents; name is used in errors.
func Parse(name string, data []byte) (*Baseline, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, fmt.Errorf("%s:%d: not a valid baseline: %v", name, lineOf(data, syn.Offset), syn)
		case errors.As(err, &typ):
			what := "the top level"
			if typ.Field != "" {
				what = fmt.Sprintf("field %q", typ.Field)
			}
			return nil, fmt.Errorf("%s:%d: not a valid baseline: %s is a JSON %s, want %s", name, lineOf(data, typ.Offset), what, typ.Value, jsonKind(typ.Type))
		}
		return nil, fmt.Errorf("%s: not a valid baseline: %v", name, err)
	}
	if f.Format != Format {
		return nil, fmt.Errorf("%s: not a libleak baseline (format %q, want %q)", name, f.Format, Format)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("%s: baseline version %d is not supported (this version reads %d)", name, f.Version, Version)
	}
	if f.Depth < 1 || f.Depth > maxDepth {
		return nil, fmt.Errorf("%s: baseline depth %d is out of range 1..%d", name, f.Depth, maxDepth)
	}
	b := &Baseline{depth: f.Depth, keys: map[string]bool{}}
	for i, s := range f.Sites {
		if s.Stack == nil {
			return nil, fmt.Errorf("%s: site %d has no stack", name, i+1)
		}
		if len(s.Stack) > f.Depth {
			return nil, fmt.Errorf("%s: site %d has %d frames, more than the depth %d", name, i+1, len(s.Stack), f.Depth)
		}
		b.keys[strings.Join(s.Stack, "\n")] = true
	}
	return b, nil
}

// jsonKind names a Go type the way the JSON it decodes from is spoken of.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Bool:
		return "a boolean"
	}
	return "a number"
}

func lineOf(data []byte, offset int64) int {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	return 1 + strings.Count(string(data[:offset]), "\n")
}

// Contains tells whether the leak's site is in the baseline, whatever its
// kind, size or process.
func (b *Baseline) Contains(l *report.Leak) bool {
	if b == nil || l == nil {
		return false
	}
	return b.keys[keyAt(l, b.depth)]
}

// Len is the number of sites in the baseline.
func (b *Baseline) Len() int {
	if b == nil {
		return 0
	}
	return len(b.keys)
}

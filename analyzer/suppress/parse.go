package suppress

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"libleak/analyzer/report"
)

// parse appends the suppressions of one file to s.
func (s *Set) parse(name string, data []byte) error {
	lines := splitLines(data)
	for i, raw := range lines {
		t := strings.TrimSpace(string(raw))
		if t == "" || t[0] == '#' {
			continue
		}
		switch {
		case t == "{":
			return s.parseValgrind(name, lines)
		case isLibleakLine(t):
			return s.parseLibleak(name, lines)
		case lsanLine.MatchString(t):
			return s.parseLSan(name, lines)
		}
		return fmt.Errorf("%s:%d: not a suppression file: expected \"{\" (valgrind), TYPE:TEMPLATE (LSan) or \"suppress\" (libleak), found %q",
			name, i+1, clip(t))
	}
	return nil
}

// clip keeps error messages to one readable line whatever the input holds.
func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// toolList is the part of a valgrind Tool:Kind line before the colon. Frame
// lines also hold a colon, so this keeps a block that lacks its Tool:Kind
// line from being taken for another tool's and silently skipped.
var toolList = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*(,[A-Za-z][A-Za-z0-9_-]*)*$`)

// isFrameLine tells a frame line from a Tool:Kind line.
func isFrameLine(t string) bool {
	return strings.HasPrefix(t, "fun:") || strings.HasPrefix(t, "obj:") || strings.HasPrefix(t, "src:")
}

// lsanLine is a sanitizer suppression: a type, a colon, a template.
var lsanLine = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*):(.*)$`)

func isLibleakLine(t string) bool {
	return t == "suppress" || strings.HasPrefix(t, "suppress ") || strings.HasPrefix(t, "suppress\t")
}

// parseKinds reads a comma-separated kind list; nil means every kind.
func parseKinds(list string) (map[string]bool, error) {
	kinds := map[string]bool{}
	for _, k := range strings.Split(list, ",") {
		k = strings.TrimSpace(k)
		switch k {
		case "all":
			return nil, nil
		case "none":
		case report.KindDefinite, report.KindIndirect, report.KindPossible,
			report.KindReachable, report.KindUnfreed:
			kinds[k] = true
		default:
			return nil, fmt.Errorf("unknown leak kind %q (want definite, indirect, possible, reachable, unfreed, all or none)", clip(k))
		}
	}
	return kinds, nil
}

// parseValgrind reads blocks of the form
//
//	{
//	   name
//	   Memcheck:Leak
//	   match-leak-kinds: definite,possible
//	   fun:pattern | obj:pattern | src:file[:line] | ...
//	}
func (s *Set) parseValgrind(name string, lines [][]byte) error {
	i := 0
	// next returns the next line that is neither blank nor a comment, and
	// its 1-based number, or ok=false at the end of the file.
	next := func() (string, int, bool) {
		for i < len(lines) {
			t := strings.TrimSpace(string(lines[i]))
			i++
			if t != "" && t[0] != '#' {
				return t, i, true
			}
		}
		return "", 0, false
	}
	for {
		t, start, ok := next()
		if !ok {
			return nil
		}
		if t != "{" {
			return fmt.Errorf("%s:%d: expected \"{\" to start a suppression, found %q", name, start, clip(t))
		}
		unterminated := fmt.Errorf("%s:%d: unterminated suppression block", name, start)
		suppName, at, ok := next()
		if !ok || suppName == "{" {
			return unterminated
		}
		if suppName == "}" {
			return fmt.Errorf("%s:%d: suppression has no name", name, at)
		}
		kindLine, at, ok := next()
		if !ok || kindLine == "{" {
			return unterminated
		}
		tools, errKind, found := strings.Cut(kindLine, ":")
		if kindLine == "}" || !found || !toolList.MatchString(tools) || isFrameLine(kindLine) {
			return fmt.Errorf("%s:%d: suppression %q: expected Tool:Kind (for example Memcheck:Leak), found %q", name, at, clip(suppName), clip(kindLine))
		}
		leak := strings.TrimSpace(errKind) == "Leak"
		if leak {
			leak = false
			for _, tool := range strings.Split(tools, ",") {
				if strings.TrimSpace(tool) == "Memcheck" {
					leak = true
				}
			}
		}
		if !leak {
			for {
				t, _, ok := next()
				if !ok || t == "{" {
					return unterminated
				}
				if t == "}" {
					break
				}
			}
			s.ignored++
			continue
		}
		sp := &supp{name: suppName, source: fmt.Sprintf("%s:%d", name, start), format: FormatValgrind}
		kindsSeen := false
		for {
			t, at, ok := next()
			if !ok || t == "{" {
				return unterminated
			}
			if t == "}" {
				break
			}
			if rest, ok := strings.CutPrefix(t, "match-leak-kinds:"); ok {
				if len(sp.lines) > 0 || kindsSeen {
					return fmt.Errorf("%s:%d: suppression %q: match-leak-kinds must come once, before the frame lines", name, at, clip(suppName))
				}
				kinds, err := parseKinds(rest)
				if err != nil {
					return fmt.Errorf("%s:%d: %v", name, at, err)
				}
				sp.kinds, kindsSeen = kinds, true
				continue
			}
			fl, err := parseFrameLine(t)
			if err != nil {
				return fmt.Errorf("%s:%d: suppression %q: %v", name, at, clip(suppName), err)
			}
			sp.lines = append(sp.lines, fl)
		}
		if len(sp.lines) == 0 {
			return fmt.Errorf("%s:%d: suppression %q has no frame lines", name, start, clip(suppName))
		}
		s.supps = append(s.supps, sp)
	}
}

func parseFrameLine(t string) (frameLine, error) {
	if t == "..." {
		return frameLine{kind: lineDots}, nil
	}
	if p, ok := strings.CutPrefix(t, "fun:"); ok {
		return frameLine{kind: lineFun, pat: p}, nil
	}
	if p, ok := strings.CutPrefix(t, "obj:"); ok {
		return frameLine{kind: lineObj, pat: p}, nil
	}
	if p, ok := strings.CutPrefix(t, "src:"); ok {
		fl := frameLine{kind: lineSrc, pat: p}
		if i := strings.LastIndexByte(p, ':'); i >= 0 {
			if n, err := strconv.Atoi(p[i+1:]); err == nil && n > 0 {
				fl.pat, fl.line = p[:i], n
			}
		}
		return fl, nil
	}
	return frameLine{}, fmt.Errorf("bad frame line %q (want fun:, obj:, src: or ...)", clip(t))
}

// parseLSan reads "leak:TEMPLATE" lines. Lines of other sanitizer types
// are counted as ignored, so one file can serve ASan, TSan and libleak.
func (s *Set) parseLSan(name string, lines [][]byte) error {
	for i, raw := range lines {
		t := strings.TrimSpace(string(raw))
		if t == "" || t[0] == '#' {
			continue
		}
		m := lsanLine.FindStringSubmatch(t)
		if m == nil {
			return fmt.Errorf("%s:%d: expected TYPE:TEMPLATE (for example leak:foo), found %q", name, i+1, clip(t))
		}
		if m[1] != "leak" {
			s.ignored++
			continue
		}
		// LSan keeps spaces after the colon, but no symbol starts with
		// one, so "leak: foo" can only mean "leak:foo".
		templ := strings.TrimSpace(m[2])
		if templ == "" || templ == "^" || templ == "$" || templ == "^$" {
			// LSan would suppress every leak; that is never what a
			// blank line was meant to do.
			return fmt.Errorf("%s:%d: empty leak template (use leak:* to suppress everything)", name, i+1)
		}
		s.supps = append(s.supps, &supp{name: "leak:" + templ, source: fmt.Sprintf("%s:%d", name, i+1),
			format: FormatLSan, templ: templ})
	}
	return nil
}

// parseLibleak reads lines of the form
//
//	suppress [name=N] [kind=K,K] [fun=GLOB] [obj=GLOB] [file=GLOB] [depth=N]
//
// where a value may be double-quoted (with \" and \\ escapes) to hold
// spaces.
func (s *Set) parseLibleak(name string, lines [][]byte) error {
	for i, raw := range lines {
		t := strings.TrimSpace(string(raw))
		if t == "" || t[0] == '#' {
			continue
		}
		where := fmt.Sprintf("%s:%d", name, i+1)
		if !isLibleakLine(t) {
			return fmt.Errorf("%s: expected \"suppress key=value ...\", found %q", where, clip(t))
		}
		body := strings.TrimSpace(t[len("suppress"):])
		fields, err := splitFields(body)
		if err != nil {
			return fmt.Errorf("%s: %v", where, err)
		}
		sp := &supp{name: body, source: where, format: FormatLibleak}
		seen := map[string]bool{}
		for _, f := range fields {
			if seen[f.key] {
				return fmt.Errorf("%s: %s= given twice", where, f.key)
			}
			seen[f.key] = true
			switch f.key {
			case "name":
				if f.value == "" {
					return fmt.Errorf("%s: empty name=", where)
				}
				sp.name = f.value
			case "kind":
				kinds, err := parseKinds(f.value)
				if err != nil {
					return fmt.Errorf("%s: %v", where, err)
				}
				sp.kinds = kinds
			case "fun":
				sp.fun, sp.hasFun = f.value, true
			case "obj":
				sp.obj, sp.hasObj = f.value, true
			case "file":
				sp.file, sp.hasFile = f.value, true
			case "depth":
				n, err := strconv.Atoi(f.value)
				if err != nil || n < 1 {
					return fmt.Errorf("%s: depth=%q is not a positive number", where, clip(f.value))
				}
				sp.depth = n
			default:
				return fmt.Errorf("%s: unknown key %q (want name, kind, fun, obj, file or depth)", where, clip(f.key))
			}
		}
		if !sp.hasFun && !sp.hasObj && !sp.hasFile {
			return fmt.Errorf("%s: suppression needs at least one of fun=, obj=, file=", where)
		}
		s.supps = append(s.supps, sp)
	}
	return nil
}

type field struct{ key, value string }

func splitFields(s string) ([]field, error) {
	var out []field
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexAny(s, " \t")
		if eq <= 0 || (sp >= 0 && sp < eq) {
			word := s
			if sp >= 0 {
				word = s[:sp]
			}
			return nil, fmt.Errorf("expected key=value, found %q", clip(word))
		}
		key := s[:eq]
		s = s[eq+1:]
		var value string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			j := 1
			closed := false
			for j < len(s) {
				c := s[j]
				if c == '\\' && j+1 < len(s) {
					b.WriteByte(s[j+1])
					j += 2
					continue
				}
				if c == '"' {
					closed = true
					j++
					break
				}
				b.WriteByte(c)
				j++
			}
			if !closed {
				return nil, fmt.Errorf("%s= has an unterminated quoted value", clip(key))
			}
			if j < len(s) && s[j] != ' ' && s[j] != '\t' {
				return nil, fmt.Errorf("%s= has text after its closing quote", clip(key))
			}
			value, s = b.String(), s[j:]
		} else {
			end := strings.IndexAny(s, " \t")
			if end < 0 {
				end = len(s)
			}
			value, s = s[:end], s[end:]
		}
		out = append(out, field{key, value})
	}
}

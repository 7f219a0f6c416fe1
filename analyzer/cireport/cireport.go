// Package cireport writes a leak report in the formats CI systems display:
// JUnit XML (GitLab, Jenkins and most CI servers), SARIF 2.1.0 (GitHub code
// scanning and other static-analysis dashboards) and GitHub Actions
// workflow commands (annotations on the pull request diff).
//
// Every writer reports each leak site of r that is not suppressed; which
// kinds to show is the caller's choice, made by filtering r.Leaks first.
// Anomalies are not written.
//
// A leak is placed at the first frame of its stack that has a source file.
// Writers given a source root prefer the first frame whose file lies under
// it, so a leak allocated inside a system header or library still points at
// the project's own code, and write that file's path relative to the root.
package cireport

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"libleak/analyzer/report"
)

// kindPhrase says how a kind of leak is lost, in valgrind's words.
func kindPhrase(kind string) string {
	switch kind {
	case report.KindDefinite:
		return "definitely lost"
	case report.KindIndirect:
		return "indirectly lost"
	case report.KindPossible:
		return "possibly lost"
	case report.KindReachable:
		return "still reachable"
	case report.KindUnfreed:
		return "not freed at exit"
	}
	return "leaked (" + kind + ")"
}

// severity is the level shared by SARIF and GitHub: definite and possible
// leaks are errors, indirect ones follow from a definite leak and unfreed
// ones have not been classified, and reachable memory is only information.
func severity(kind string) string {
	switch kind {
	case report.KindDefinite, report.KindPossible:
		return "error"
	case report.KindReachable:
		return "note"
	}
	return "warning"
}

// leaks returns the leaks to write, in report order.
func leaks(r *report.Report) []*report.Leak {
	var out []*report.Leak
	if r == nil {
		return nil
	}
	for i := range r.Leaks {
		if r.Leaks[i].Suppressed == "" {
			out = append(out, &r.Leaks[i])
		}
	}
	return out
}

func processes(r *report.Report) map[int]*report.Process {
	m := map[int]*report.Process{}
	if r != nil {
		for i := range r.Processes {
			m[r.Processes[i].Pid] = &r.Processes[i]
		}
	}
	return m
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func functionName(f *report.Frame) string {
	if f.Function == "" || f.Function == "??" {
		return "??"
	}
	return f.Function
}

// summary is one sentence about a leak, valgrind style.
func summary(l *report.Leak, exe string) string {
	var b strings.Builder
	b.WriteString(plural(l.Bytes, "byte", "bytes"))
	if l.IndirectBytes > 0 && l.IndirectBytes <= l.Bytes {
		fmt.Fprintf(&b, " (%d direct, %d indirect)", l.Bytes-l.IndirectBytes, l.IndirectBytes)
	}
	verb := "are"
	if l.Blocks == 1 {
		verb = "is"
	}
	fmt.Fprintf(&b, " in %s %s %s", plural(l.Blocks, "block", "blocks"), verb, kindPhrase(l.Kind))
	if len(l.Frames) > 0 {
		fmt.Fprintf(&b, " in %s", functionName(&l.Frames[0]))
	}
	fmt.Fprintf(&b, " (pid %d", l.Pid)
	if exe != "" {
		fmt.Fprintf(&b, ", %s", path.Base(exe))
	}
	b.WriteString(")")
	return b.String()
}

// stackText lists the frames one per line, ASan style.
func stackText(l *report.Leak) string {
	if len(l.Frames) == 0 {
		return "    (no stack)"
	}
	var b strings.Builder
	for i := range l.Frames {
		f := &l.Frames[i]
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "    #%d 0x%x in %s", i, f.Address, functionName(f))
		if f.File != "" {
			b.WriteString(" " + f.File)
			if f.Line > 0 {
				fmt.Fprintf(&b, ":%d", f.Line)
			}
		}
		if f.Module != "" {
			b.WriteString(" (" + f.Module + ")")
		}
		if f.Inlined {
			b.WriteString(" [inlined]")
		}
	}
	return b.String()
}

// relative returns file's path relative to root when it lies under it.
// A relative file name is taken to be relative to root already, unless it
// climbs out of it, as DWARF names from other projects' builds do.
func relative(file, root string) (string, bool) {
	if root == "" || file == "" {
		return "", false
	}
	if !filepath.IsAbs(file) {
		rel := filepath.Clean(file)
		if rel == ".." || strings.HasPrefix(rel, "../") || rel == "." {
			return "", false
		}
		return filepath.ToSlash(rel), true
	}
	rel, err := filepath.Rel(filepath.Clean(root), filepath.Clean(file))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return filepath.ToSlash(rel), true
}

// siteFrame picks the frame a leak is shown at (see the package comment),
// or -1 when no frame has a source file.
func siteFrame(l *report.Leak, root string) int {
	if root != "" {
		for i := range l.Frames {
			if _, ok := relative(l.Frames[i].File, root); ok {
				return i
			}
		}
	}
	for i := range l.Frames {
		if l.Frames[i].File != "" {
			return i
		}
	}
	return -1
}

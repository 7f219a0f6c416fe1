package cireport

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"libleak/analyzer/report"
)

// WriteGitHubAnnotations writes one GitHub Actions workflow command per
// leak site ("::error file=F,line=N,title=T::MESSAGE"), which the Actions
// runner turns into annotations on the changed lines. Definite and possible
// leaks are errors, reachable memory a notice, the other kinds warnings.
// Files under sourceRoot (normally $GITHUB_WORKSPACE) are written relative
// to it, as GitHub requires for the annotation to land on the file; a leak
// without a source file is annotated on the run only.
func WriteGitHubAnnotations(w io.Writer, r *report.Report, sourceRoot string) error {
	root := ""
	if sourceRoot != "" {
		if abs, err := filepath.Abs(sourceRoot); err == nil {
			root = abs
		}
	}
	bw := bufio.NewWriter(w)
	procs := processes(r)
	for _, l := range leaks(r) {
		exe := ""
		if p := procs[l.Pid]; p != nil {
			exe = p.Exe
		}
		var props []string
		if i := siteFrame(l, root); i >= 0 {
			f := &l.Frames[i]
			file := f.File
			if rel, ok := relative(file, root); ok {
				file = rel
			}
			props = append(props, "file="+escapeProperty(file))
			if f.Line > 0 {
				props = append(props, fmt.Sprintf("line=%d", f.Line))
			}
		}
		title := fmt.Sprintf("%s leak: %s in %s", l.Kind, plural(l.Bytes, "byte", "bytes"), plural(l.Blocks, "block", "blocks"))
		props = append(props, "title="+escapeProperty(title))
		msg := summary(l, exe) + "\n" + stackText(l)
		fmt.Fprintf(bw, "::%s %s::%s\n", githubLevel(l.Kind), strings.Join(props, ","), escapeData(msg))
	}
	return bw.Flush()
}

func githubLevel(kind string) string {
	switch severity(kind) {
	case "error":
		return "error"
	case "note":
		return "notice"
	}
	return "warning"
}

// escapeData escapes a workflow command's message the way the Actions
// toolkit does, so a stack's newlines survive as line breaks.
func escapeData(s string) string {
	s = strings.ReplaceAll(s, "%", "%25")
	s = strings.ReplaceAll(s, "\r", "%0D")
	return strings.ReplaceAll(s, "\n", "%0A")
}

// escapeProperty additionally escapes the separators of the property list.
func escapeProperty(s string) string {
	s = escapeData(s)
	s = strings.ReplaceAll(s, ":", "%3A")
	return strings.ReplaceAll(s, ",", "%2C")
}
